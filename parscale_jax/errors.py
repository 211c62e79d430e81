"""The error a user can fix (the CLI prints its one-line message and exits non-zero), and how a
full disk is recognised in what the storage libraries raise."""
import errno


class UserError(ValueError):
  """Bad input (config, checkpoint, results file, data): the message names the problem."""


def is_disk_full(error: BaseException) -> bool:
  """An OSError(ENOSPC), or a library's own error carrying the OS's text: safetensors ("os error
  28"), orbax/tensorstore and array_record ("No space left on device")."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return True
  return "No space left" in str(error) or "os error 28" in str(error)
