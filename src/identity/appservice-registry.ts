import { timingSafeEqual, createHash } from 'node:crypto';
import type { RegistrationResult } from '../config/appservice-registrations.js';
import { ConfigError } from '../config/config-error.js';
import { readRegistrationFiles } from '../config/read-registrations.js';

/** An application service as Synapse loads it from its registration file (the same files, pointed at by config). */
export interface Appservice {
  readonly id: string;
  readonly senderLocalpart: string;
  readonly userNamespaces: readonly RegExp[];
  readonly asTokenDigest: Buffer;
}

export class AppserviceRegistry {
  private constructor(private readonly appservices: readonly Appservice[]) {}

  static empty(): AppserviceRegistry {
    return new AppserviceRegistry([]);
  }

  /** Reads the registration files (`appservice_config_files`) and builds the registry from them (fromRegistrations). */
  static async load(paths: readonly string[]): Promise<AppserviceRegistry> {
    return AppserviceRegistry.fromRegistrations(await readRegistrationFiles(paths));
  }

  /**
   * The registry of the files the config loader's reader read (`appservice_config_files`, in order). The loader
   * already refused any bad file when the config was loaded; a file changed since then is refused again here, in the
   * same words.
   */
  static fromRegistrations(results: readonly RegistrationResult[]): AppserviceRegistry {
    const appservices: Appservice[] = [];
    const problems: string[] = [];
    results.forEach((result, index) => {
      if (!result.ok) {
        problems.push(...result.problems.map((problem) => `appservice_config_files[${index}]: ${problem}`));
        return;
      }
      const { id, senderLocalpart, userNamespaces, asToken } = result.registration;
      appservices.push({ id, senderLocalpart, userNamespaces, asTokenDigest: createHash('sha256').update(asToken).digest() });
    });
    if (problems.length > 0) throw new ConfigError(problems);
    return new AppserviceRegistry(appservices);
  }

  get enabled(): boolean {
    return this.appservices.length > 0;
  }

  /** The appservice owning this as_token (constant-time over all of them: no timing hint of which exists). */
  byToken(asToken: string): Appservice | undefined {
    const digest = createHash('sha256').update(asToken).digest();
    let found: Appservice | undefined;
    for (const appservice of this.appservices) {
      if (timingSafeEqual(digest, appservice.asTokenDigest) && found === undefined) found = appservice;
    }
    return found;
  }

  /** Whether any appservice may act as this user (its sender, or a match of its user namespaces). */
  ownsUser(userId: string, localpart: string): boolean {
    return this.appservices.some((appservice) => AppserviceRegistry.mayActAs(appservice, userId, localpart));
  }

  /** Spec: an appservice may act as its sender user and as any user matching its user namespaces. */
  static mayActAs(appservice: Appservice, userId: string, localpart: string): boolean {
    if (localpart === appservice.senderLocalpart) return true;
    return appservice.userNamespaces.some((pattern) => pattern.test(userId));
  }
}
