import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isMapping } from './env-substitution.js';
import type { ProblemList } from './problem-list.js';

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

const SECRET_FILE_KEYS: readonly SecretFileKey[] = [
  { container: section('homeserver'), key: 'secret', fileKey: 'secret_path' },
  { container: section('sessions'), key: 'encryption_key', fileKey: 'encryption_key_path' },
  { container: section('admin'), key: 'token', fileKey: 'token_path' },
  { container: eachProvider, key: 'client_secret', fileKey: 'client_secret_path' },
  // Synapse's name for the PEM file of client_secret_jwt_key.
  { container: eachProviderJwtKey, key: 'key', fileKey: 'key_file' },
];

/**
 * Reads every `*_path` secret file into its plain key (relative paths from baseDir, the config file's folder; the
 * trailing newline that editors add is dropped) and makes appservice registration paths absolute. Mutates `root`.
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
  if (Array.isArray(appserviceFiles)) {
    root['appservice_config_files'] = appserviceFiles.map((file, index) => {
      if (typeof file !== 'string' || file === '') return file;
      const absolute = resolve(baseDir, file);
      if (!existsSync(absolute)) problems.report(['appservice_config_files', index], `file not found: ${absolute}`);
      return absolute;
    });
  }
}

function readFailure(err: unknown): string {
  const code = typeof err === 'object' && err !== null && 'code' in err ? (err as { code: unknown }).code : undefined;
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    default:
      return err instanceof Error ? err.message : String(err);
  }
}
