"""Exceptions users can act on, and the process exit codes they map to.

Every user-facing error names the file (or option) and the problem in one line; the CLI prints
`ffray: error: <message>` on stderr, no traceback, and exits with the class's code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # processing failed, or some rows of a batch failed
EXIT_BAD_INPUT = 2  # bad input file or bad arguments (user error)
EXIT_MODEL = 3  # a model is missing, unverifiable, refused by licence, or breaks its I/O contract
EXIT_LABEL = 4  # `ffray label`: no synthetic-media label, or a label check failed (C2PA signature, hash, trust)
EXIT_INTERRUPTED = 130  # Ctrl-C; a rerun of the same command resumes

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "processing failed (for a batch: at least one row failed; the others completed)",
    EXIT_BAD_INPUT: "bad input or arguments: missing/unreadable/corrupt file, no video stream, bad option",
    EXIT_MODEL: "model unavailable: not in the cache and not downloadable, hash mismatch, licence refused, "
    "or I/O contract mismatch",
    EXIT_LABEL: "label check failed (ffray label): no synthetic-media label, a C2PA signature or hash binding "
    "that does not verify (file changed after signing), an untrusted signer (--trust), or a sidecar for "
    "another file",
    EXIT_INTERRUPTED: "interrupted; rerun the same command to resume",
}


class FfrayError(Exception):
    """Base of every error a user can act on."""

    exit_code = EXIT_FAILED


class InputError(FfrayError):
    """Bad user input: a file that is missing, unreadable or not what it should be; a bad option."""

    exit_code = EXIT_BAD_INPUT


class MediaError(InputError):
    """A media file cannot be probed, decoded or written. The message names the file."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelError(FfrayError):
    """A model cannot be resolved, verified or loaded."""

    exit_code = EXIT_MODEL


class ProcessingError(FfrayError):
    """A video (or chunk) failed for a reason other than bad input or a missing model."""

    exit_code = EXIT_FAILED
