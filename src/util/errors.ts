/** An error caused by the user's input (a file, flag or field): the CLI prints its message on one line, no stack. */
export class LutraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LutraError';
  }
}
