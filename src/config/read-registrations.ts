import type { RegistrationResult } from './appservice-registrations.js';

/**
 * readAppserviceRegistrations with its module, and the YAML parser with it (about 1 MB of V8's heap), loaded only by
 * a config that names registration files: the config itself was parsed in a thread of its own (config-thread.ts).
 */
export async function readRegistrationFiles(paths: readonly string[]): Promise<RegistrationResult[]> {
  if (paths.length === 0) return [];
  return (await import('./appservice-registrations.js')).readAppserviceRegistrations(paths);
}
