import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { readAppserviceRegistrations, type AppserviceRegistration } from './appservice-registrations.js';
import { isMapping } from './env-substitution.js';
import type { ProblemList } from './problem-list.js';
import { readFailure } from './read-failure.js';

/** Where a secret may instead be given as a file, like Synapse's client_secret_path. */
interface SecretFileKey {
  readonly container: (root: Record<string, unknown>) => { path: PropertyKey[]; value: unknown }[];
  readonly key: string;
  readonly fileKey: string;
}

const section = (name: string) => (root: Record<string, unknown>) => [{ path: [name], value: root[name] }];
const eachProvider = (root: Record<string, unknown>) => {
  const providers = root['oidc_providers'];
  return Array.isArray(providers) ? providers.map((value, index) => ({ path: ['oidc_providers', index], value })) : [];
};
const eachProviderJwtKey = (root: Record<string, unknown>) =>
  eachProvider(root).map(({ path, value }) => ({ path: [...path, 'client_secret_jwt_key'], value: isMapping(value) ? value['client_secret_jwt_key'] : undefined }));

const eachPreviousEncryptionKey = (root: Record<string, unknown>) => {
  const sessions = root['sessions'];
  const list = isMapping(sessions) ? sessions['previous_encryption_keys'] : undefined;
  return Array.isArray(list) ? list.map((value, index) => ({ path: ['sessions', 'previous_encryption_keys', index], value })) : [];
};

const eachPreviousHomeserverSecret = (root: Record<string, unknown>) => {
  const homeserver = root['homeserver'];
  const list = isMapping(homeserver) ? homeserver['previous_secrets'] : undefined;
  return Array.isArray(list) ? list.map((value, index) => ({ path: ['homeserver', 'previous_secrets', index], value })) : [];
};

const homeserverJwt = (root: Record<string, unknown>) => {
  const homeserver = root['homeserver'];
  return [{ path: ['homeserver', 'jwt'], value: isMapping(homeserver) ? homeserver['jwt'] : undefined }];
};

const SECRET_FILE_KEYS: readonly SecretFileKey[] = [
  { container: section('homeserver'), key: 'secret', fileKey: 'secret_path' },
  { container: eachPreviousHomeserverSecret, key: 'secret', fileKey: 'secret_path' },
  { container: section('homeserver'), key: 'admin_token', fileKey: 'admin_token_path' },
  { container: homeserverJwt, key: 'key', fileKey: 'key_path' },
  { container: section('sessions'), key: 'encryption_key', fileKey: 'encryption_key_path' },
  { container: eachPreviousEncryptionKey, key: 'key', fileKey: 'key_path' },
  { container: section('admin'), key: 'token', fileKey: 'token_path' },
  { container: section('oauth_server'), key: 'signing_key', fileKey: 'signing_key_path' },
  { container: eachProvider, key: 'client_secret', fileKey: 'client_secret_path' },
  // Synapse's name for the PEM file of client_secret_jwt_key.
  { container: eachProviderJwtKey, key: 'key', fileKey: 'key_file' },
];

/**
 * Reads every `*_path` secret file into its plain key (relative paths from baseDir, the config file's folder; the
 * trailing newline that editors add is dropped), makes appservice registration paths absolute and checks those files.
 * Mutates `root`.
 */
export function resolveFileReferences(root: Record<string, unknown>, baseDir: string, problems: ProblemList): void {
  for (const { container, key, fileKey } of SECRET_FILE_KEYS) {
    for (const { path, value } of container(root)) {
      if (!isMapping(value) || !(fileKey in value)) continue;
      const file = value[fileKey];
      delete value[fileKey];
      if (key in value) {
        problems.report([...path, key], `give either ${key} or ${fileKey}, not both`);
        continue;
      }
      if (typeof file !== 'string' || file === '') {
        problems.report([...path, fileKey], 'must be a file path');
        problems.cover([...path, key]);
        continue;
      }
      const absolute = resolve(baseDir, file);
      try {
        value[key] = readFileSync(absolute, 'utf8').replace(/(\r?\n)+$/, '');
      } catch (err: unknown) {
        problems.report([...path, fileKey], `cannot read ${absolute}: ${readFailure(err)}`);
        problems.cover([...path, key]);
      }
    }
  }

  const appserviceFiles = root['appservice_config_files'];
  const homeserver = root['homeserver'];
  const own = isMapping(homeserver) && isMapping(homeserver['appservice']) ? homeserver['appservice'] : undefined;
  const ownFile = own?.['registration_file'];
  let ownAbsolute: string | undefined;
  if (own !== undefined && typeof ownFile === 'string' && ownFile !== '') {
    ownAbsolute = resolve(baseDir, ownFile);
    own['registration_file'] = ownAbsolute;
    const others = Array.isArray(appserviceFiles) ? appserviceFiles.flatMap((file: unknown) => (typeof file === 'string' && file !== '' ? [resolve(baseDir, file)] : [])) : [];
    // Read together with the others: the homeserver refuses two registrations with one id or as_token, so do we.
    const [result, ...rest] = readAppserviceRegistrations([ownAbsolute, ...others]);
    const at = ['homeserver', 'appservice', 'registration_file'];
    if (result !== undefined && !result.ok) for (const problem of result.problems) problems.report(at, problem);
    if (result?.ok === true) for (const problem of ownRegistrationProblems(result.registration)) problems.report(at, `${ownAbsolute}: ${problem}`);
    rest.forEach((other, index) => {
      if (!other.ok && other.problems.some((line) => line.includes(`of ${ownAbsolute}`))) {
        problems.report(['appservice_config_files', index], 'is the same appservice as homeserver.appservice.registration_file (list only the OTHER registrations, the bridges, there)');
      }
    });
  }
  if (Array.isArray(appserviceFiles)) {
    const absolute = appserviceFiles.map((file: unknown) => (typeof file === 'string' && file !== '' ? resolve(baseDir, file) : file));
    root['appservice_config_files'] = absolute;
    // Parsed now, as start-up parses them (identity/appservice-registry.ts reads them with the same function).
    const readable = absolute.flatMap((file, index) => (typeof file === 'string' ? [{ file, index }] : []));
    readAppserviceRegistrations(readable.map(({ file }) => file)).forEach((result, position) => {
      if (result.ok) return;
      const index = readable[position]?.index ?? position;
      for (const problem of result.problems) problems.report(['appservice_config_files', index], problem);
    });
  }
}

/**
 * What the proxy's own registration must look like (docs/homeservers.md, measured on Synapse, Dendrite and Conduit):
 * a non-exclusive user namespace (an exclusive one breaks bridges' puppets and, on Conduit, password login), no
 * pushed events, no rate limit, and never MSC4190 (it turns appservice login off).
 */
function ownRegistrationProblems(registration: AppserviceRegistration): string[] {
  const problems: string[] = [];
  if (registration.userNamespaces.length === 0) problems.push('namespaces.users is empty: the proxy can log in no one (use regex: "@.*:your.server", exclusive: false)');
  if (registration.exclusiveUsers) problems.push('namespaces.users must be exclusive: false (an exclusive namespace makes bridges fail to register their users)');
  if (registration.url !== null && registration.url !== '') problems.push('url must be null ("" on Dendrite): the proxy receives no events');
  if (registration.rateLimited) problems.push('rate_limited must be false, or the homeserver rate-limits every login the proxy makes');
  if (registration.msc4190) problems.push('io.element.msc4190 / device_management must not be set: it turns appservice login off');
  return problems;
}
