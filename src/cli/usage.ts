/**
 * A mistake in how a command was called (a missing or unknown subcommand, a bad option value).
 * main.ts reports it in one line and exits 64 (EX_USAGE), so that scripts can tell "called
 * wrongly" from "failed". It lives apart from main.ts because importing main.ts runs the CLI.
 */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
