import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

/** A checkout of one commit that HCR can be started from. */
export interface Snapshot {
  readonly dir: string;
  readonly ref: string;
  readonly sha: string;
  readonly subject: string;
}

/**
 * Extracts commit `ref` of the repository into `dir` with `git archive` (no
 * worktree metadata, nothing in .git changes) and gives it the repository's
 * installed dependencies: the root node_modules by symlink, each package's
 * pnpm link farm by copy, whose relative links then resolve inside the
 * snapshot, so `@hcr/*` imports load the snapshot's own sources.
 */
export function snapshot(repoRoot: string, ref: string, dir: string): Snapshot {
  const git = (...args: string[]) => execFileSync('git', ['-C', repoRoot, ...args], { encoding: 'utf8' }).trim();
  let sha: string;
  try {
    sha = git('rev-parse', '--verify', `${ref}^{commit}`);
  } catch {
    throw new Error(`"${ref}" is not a commit of ${repoRoot}`);
  }
  mkdirSync(dir, { recursive: true });
  const archive = execFileSync('git', ['-C', repoRoot, 'archive', '--format=tar', sha], { maxBuffer: 1 << 30 });
  execFileSync('tar', ['-x', '-C', dir], { input: archive });
  symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
  for (const group of ['packages', 'examples']) {
    if (!existsSync(join(dir, group))) continue;
    for (const pkg of readdirSync(join(dir, group))) {
      const deps = join(repoRoot, group, pkg, 'node_modules');
      if (existsSync(deps) && existsSync(join(dir, group, pkg))) {
        cpSync(deps, join(dir, group, pkg, 'node_modules'), { recursive: true, verbatimSymlinks: true });
      }
    }
  }
  return { dir, ref, sha, subject: git('log', '-1', '--format=%s', sha) };
}
