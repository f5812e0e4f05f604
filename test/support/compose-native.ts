// The docker-compose demo's files (docker-compose.yml, deploy/compose/**, deploy/nginx/*.conf) run natively, on
// loopback ports, by test/interop/deploy-layouts.test.ts. Only what must differ outside a compose network is rewritten
// — hosts, ports, container paths — by literal replacements listed here. Every replacement must match (a renamed key or
// host in a deploy file fails the test instead of being silently skipped), and no container-only address may be left
// afterwards (a new reference in a deploy file needs a rule here). test/unit/compose-native.test.ts checks both on every
// `npm test`, without starting anything.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const COMPOSE_FILE = join(REPO_ROOT, 'docker-compose.yml');

/** The deploy files the native run reads, relative to the repository root. */
export const DEPLOY_FILES = {
  homeserver: 'deploy/compose/synapse/homeserver.yaml',
  synapseLog: 'deploy/compose/synapse/log.yaml',
  proxy: 'deploy/compose/proxy/config.yaml',
  realm: 'deploy/compose/keycloak/matrix-realm.json',
  nginxFull: 'deploy/nginx/full-proxy.conf',
  nginxAuthOnly: 'deploy/nginx/auth-routes-only.conf',
} as const;
export type DeployFile = keyof typeof DEPLOY_FILES;

/** Where each compose service listens when run natively (all on 127.0.0.1), and the per-run folders. */
export interface NativePlaces {
  readonly nginxPort: number;
  readonly proxyPort: number;
  readonly proxyFacingPort: number;
  readonly proxyMetricsPort: number;
  readonly synapsePort: number;
  readonly postgresPort: number;
  readonly redisPort: number;
  readonly keycloakPort: number;
  /** Synapse's /data volume. */
  readonly synapseDataDir: string;
  /** Synapse's /config mount (the rendered homeserver.yaml and log.yaml). */
  readonly synapseConfigDir: string;
  /**
   * Where nginx logs: the image sends its logs to the container's stdout and stderr, which natively are sockets here
   * (node's child pipes), and nginx cannot open /dev/stdout on a socket.
   */
  readonly nginxLogDir: string;
}

export type Rewrite = readonly [from: string, to: string];

/** The compose file, parsed. */
export function readCompose(): Record<string, any> {
  return parse(readFileSync(COMPOSE_FILE, 'utf8')) as Record<string, any>;
}

/** /run/secrets/<name> → the file docker-compose.yml's top-level `secrets:` mounts there. */
export function secretRewrites(compose: Record<string, any> = readCompose()): Rewrite[] {
  return Object.entries(compose['secrets'] as Record<string, { file: string }>).map(([name, { file }]) => [`/run/secrets/${name}`, join(REPO_ROOT, file)]);
}

/** The replacements for one deploy file, each required to match at least once. */
export function nativeRewrites(file: DeployFile, places: NativePlaces, compose: Record<string, any> = readCompose()): Rewrite[] {
  const at = (port: number) => `127.0.0.1:${port}`;
  // Published ports (what a browser on the docker host uses) and compose-network addresses map to the same loopback
  // listeners natively.
  const publicUrl: Rewrite = ['http://localhost:8080', `http://${at(places.nginxPort)}`];
  const keycloakPublic: Rewrite = ['http://localhost:8081', `http://${at(places.keycloakPort)}`];
  const keycloakInternal: Rewrite = ['http://keycloak:8080', `http://${at(places.keycloakPort)}`];
  const nginxLogs: Rewrite[] = [
    ['access_log /dev/stdout', `access_log ${places.nginxLogDir}/access.log`],
    ['error_log /dev/stderr', `error_log ${places.nginxLogDir}/error.log`],
  ];
  const usedSecrets = (text: string) => secretRewrites(compose).filter(([from]) => text.includes(from));
  switch (file) {
    case 'homeserver': {
      const text = deployText(file);
      return [
        publicUrl,
        ['- port: 8008', `- port: ${places.synapsePort}`],
        ["bind_addresses: ['0.0.0.0']", "bind_addresses: ['127.0.0.1']"],
        ['host: postgres', 'host: 127.0.0.1'],
        ['port: 5432', `port: ${places.postgresPort}`],
        ['http://proxy:8010/', `http://${at(places.proxyFacingPort)}/`],
        ['/config/', `${places.synapseConfigDir}/`],
        ['/data/', `${places.synapseDataDir}/`],
        ...usedSecrets(text),
      ];
    }
    case 'synapseLog':
      return [];
    case 'proxy': {
      const text = deployText(file);
      return [
        publicUrl,
        keycloakPublic,
        keycloakInternal,
        ['host: 0.0.0.0\n  port: 8009', `host: 127.0.0.1\n  port: ${places.proxyPort}`],
        ['host: 0.0.0.0\n    port: 8010', `host: 127.0.0.1\n    port: ${places.proxyFacingPort}`],
        ['host: 0.0.0.0\n    port: 9009', `host: 127.0.0.1\n    port: ${places.proxyMetricsPort}`],
        ['172.30.89.10/32', '127.0.0.1/32'],
        ['http://synapse:8008', `http://${at(places.synapsePort)}`],
        ['redis://redis:6379', `redis://${at(places.redisPort)}`],
        ...usedSecrets(text),
      ];
    }
    case 'realm':
      return [publicUrl, ['http://proxy:8009', `http://${at(places.proxyPort)}`]];
    case 'nginxFull':
      return [
        ...nginxLogs,
        ['listen 8080;', `listen ${at(places.nginxPort)};`],
        ['server proxy:8009;', `server ${at(places.proxyPort)};`],
      ];
    case 'nginxAuthOnly':
      return [
        ...nginxLogs,
        ['listen 8080;', `listen ${at(places.nginxPort)};`],
        ['server proxy:8009;', `server ${at(places.proxyPort)};`],
        ['server synapse:8008;', `server ${at(places.synapsePort)};`],
      ];
  }
}

/** Applies the rules to `text`; throws when a rule matches nothing or a container-only address is left. */
export function renderForNative(name: string, text: string, rules: readonly Rewrite[]): string {
  const unmatched = rules.filter(([from]) => !text.includes(from)).map(([from]) => from);
  // One pass over the original text, longest rule first: a replacement is never rewritten again by a later rule.
  const ordered = [...rules].sort(([a], [b]) => b.length - a.length);
  const out =
    ordered.length === 0
      ? text
      : text.replace(new RegExp(ordered.map(([from]) => from.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g'), (found) => ordered.find(([from]) => from === found)?.[1] ?? found);
  if (unmatched.length > 0) throw new Error(`${name}: rewrite rules that match nothing (was the file changed?): ${unmatched.map((rule) => JSON.stringify(rule)).join(', ')}`);
  const left = containerOnlyAddresses(name, out);
  if (left.length > 0) throw new Error(`${name}: container-only addresses left after rewriting (add a rule in test/support/compose-native.ts): ${left.join(', ')}`);
  return out;
}

/** The deploy file rendered for the native run. */
export function renderDeployFile(file: DeployFile, places: NativePlaces, compose: Record<string, any> = readCompose()): string {
  return renderForNative(DEPLOY_FILES[file], deployText(file), nativeRewrites(file, places, compose));
}

export function deployText(file: DeployFile): string {
  return readFileSync(join(REPO_ROOT, DEPLOY_FILES[file]), 'utf8');
}

/**
 * What only means something inside the compose network or a container: compose service hosts, published ports,
 * the network's addresses, wildcard binds, container paths. Comments are ignored (they may name them to explain).
 */
const CONTAINER_ONLY: readonly RegExp[] = [
  /\/\/(?:synapse|proxy|keycloak|redis|postgres|nginx)[:/]/g,
  /\bserver (?:synapse|proxy|keycloak)\b/g,
  /\bhost: (?:synapse|proxy|keycloak|redis|postgres)\b/g,
  /\blocalhost:80[0-9]{2}\b/g,
  /\b0\.0\.0\.0\b/g,
  /\b172\.30\.89\.\d+/g,
  /\/run\/secrets\//g,
  /(?:^|[\s'"[])\/(?:data|config)\//g,
  /\blisten 8080;/g,
  /\bport: (?:5432|6379|8008|8009|8010|9009)\b/g,
];

export function containerOnlyAddresses(name: string, text: string): string[] {
  const withoutComments = name.endsWith('.json') ? text : text.replace(/(^|\s)#.*$/gm, '$1');
  return CONTAINER_ONLY.flatMap((pattern) => [...withoutComments.matchAll(pattern)].map((match) => JSON.stringify(match[0].trim())));
}
