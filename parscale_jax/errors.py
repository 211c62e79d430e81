"""The error a user can fix: the CLI prints its one-line message and exits non-zero."""


class UserError(ValueError):
  """Bad input (config, checkpoint, results file, data): the message names the problem."""
