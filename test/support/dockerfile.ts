// Reads the project's Dockerfile and .dockerignore well enough to check them without a container engine (none runs in
// CI): stages, COPY sources, RUN lines, ENV, USER, HEALTHCHECK, ENTRYPOINT and CMD. Only the instruction forms the
// Dockerfile uses are understood; anything else is an error, so a new instruction cannot slip past the checks.

export interface DockerCopy {
  readonly from: string | undefined;
  readonly sources: readonly string[];
  readonly destination: string;
}

export interface DockerStage {
  readonly name: string;
  readonly base: string;
  readonly copies: DockerCopy[];
  readonly runs: string[];
  readonly env: Record<string, string>;
  user: string | undefined;
  workdir: string | undefined;
  healthcheck: string[] | undefined;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
}

export interface ParsedDockerfile {
  readonly args: Record<string, string>;
  readonly stages: DockerStage[];
}

export function parseDockerfile(text: string): ParsedDockerfile {
  const args: Record<string, string> = {};
  const stages: DockerStage[] = [];
  // Join continuation lines; drop comments and the parser directive.
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
  for (const line of lines) {
    const [instruction = '', ...restParts] = line.split(/\s+/);
    const rest = line.slice(instruction.length).trim();
    const stage = stages.at(-1);
    const inStage = (): DockerStage => {
      if (stage === undefined) throw new Error(`${instruction} before FROM`);
      return stage;
    };
    switch (instruction.toUpperCase()) {
      case 'ARG': {
        const [name = '', value = ''] = rest.split('=');
        args[name] = value;
        break;
      }
      case 'FROM': {
        const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
        if (match === null) throw new Error(`cannot read FROM ${rest}`);
        stages.push({ base: match[1] ?? '', name: match[2] ?? String(stages.length), copies: [], runs: [], env: {}, user: undefined, workdir: undefined, healthcheck: undefined, entrypoint: undefined, cmd: undefined });
        break;
      }
      case 'WORKDIR':
        inStage().workdir = rest;
        break;
      case 'COPY': {
        const from = /^--from=(\S+)$/.exec(restParts[0] ?? '')?.[1];
        const paths = from === undefined ? restParts : restParts.slice(1);
        if (paths.some((path) => path.startsWith('--')) || paths.length < 2) throw new Error(`unsupported COPY form: ${line}`);
        inStage().copies.push({ from, sources: paths.slice(0, -1), destination: paths.at(-1) ?? '' });
        break;
      }
      case 'RUN':
        inStage().runs.push(rest);
        break;
      case 'ENV':
        for (const match of rest.matchAll(/(\w+)=(\S+)/g)) inStage().env[match[1] ?? ''] = match[2] ?? '';
        break;
      case 'USER':
        inStage().user = rest;
        break;
      case 'HEALTHCHECK': {
        const cmd = /\bCMD\s+(\[.*\])$/.exec(rest)?.[1];
        if (cmd === undefined) throw new Error(`HEALTHCHECK must use the exec form: ${line}`);
        inStage().healthcheck = JSON.parse(cmd) as string[];
        break;
      }
      case 'ENTRYPOINT':
        inStage().entrypoint = JSON.parse(rest) as string[];
        break;
      case 'CMD':
        inStage().cmd = JSON.parse(rest) as string[];
        break;
      case 'EXPOSE':
      case 'STOPSIGNAL':
        break;
      default:
        throw new Error(`instruction not understood by test/support/dockerfile.ts: ${line}`);
    }
  }
  return { args, stages };
}

/**
 * Whether .dockerignore keeps `path` (relative to the context) out of the build context. Docker's rules: patterns in
 * order, the last one matching the path or one of its parent folders decides, `!` re-includes; `*` stays within one
 * path segment, `**` spans any number.
 */
export function dockerignoreExcludes(dockerignore: string, path: string): boolean {
  const patterns = dockerignore
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const candidates = path.split('/').map((_, index, parts) => parts.slice(0, index + 1).join('/'));
  let excluded = false;
  for (const raw of patterns) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).replace(/^\/+/, '').replace(/\/+$/, '');
    const regex = new RegExp(`^${pattern.split('**').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')).join('.*')}$`);
    if (candidates.some((candidate) => regex.test(candidate))) excluded = !negated;
  }
  return excluded;
}
