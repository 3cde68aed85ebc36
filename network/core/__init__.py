"""What every script stands on: the command line, the backend's quiet start and the
device line, the console log, atomic file writes and the lab's one error type."""
