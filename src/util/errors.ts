/**
 * Stable error codes a program can switch on (the server maps them to HTTP statuses):
 * - invalid_argument: an option, flag or request field out of range or of the wrong type
 * - invalid_model: a model file or folder that cannot be used (missing, damaged, unsupported)
 * - context_length_exceeded: the prompt (plus what must be generated) does not fit the context
 * - queue_full: every session is busy and the wait queue is full
 * - disposed: the model or session was disposed
 */
export type LutraErrorCode = 'invalid_argument' | 'invalid_model' | 'context_length_exceeded' | 'queue_full' | 'disposed';

/** An error caused by the user's input (a file, flag or field): the CLI prints its message on one line, no stack. */
export class LutraError extends Error {
  readonly code: LutraErrorCode;
  constructor(message: string, code: LutraErrorCode = 'invalid_argument') {
    super(message);
    this.name = 'LutraError';
    this.code = code;
  }
}
