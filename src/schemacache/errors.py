"""The error taxonomy shared by the registry, the node and the service.

Registry errors say what went wrong with a read or a write; handler errors say
whether a failed handler call is worth retrying (temporary) or not (permanent).
"""

from __future__ import annotations


class SchemaCacheError(Exception):
    """Base class of every error schemacache raises on purpose."""


class ConflictError(SchemaCacheError):
    """A compare-and-set write lost: the key's mod_revision was not the expected one.

    :param key: the key written.
    :param expected: the revision the writer expected (``0`` = must not exist).
    :param actual: the key's mod_revision at the time of the write (``0`` = absent).
    """

    def __init__(self, key: str, expected: int | None, actual: int, message: str | None = None):
        self.key = key
        self.expected = expected
        self.actual = actual
        if message is None:
            if expected == 0:
                message = f"{key} already exists (mod_revision {actual})"
            elif actual == 0:
                message = f"{key} does not exist (expected mod_revision {expected})"
            else:
                message = f"{key} is at mod_revision {actual}, expected {expected}"
        super().__init__(message)


class ReferencedError(ConflictError):
    """A delete was refused because other resources reference the key.

    :param key: the key whose delete was refused.
    :param dependents: the keys that reference it.
    """

    def __init__(self, key: str, dependents: list[str]):
        self.dependents = sorted(dependents)
        shown = ", ".join(self.dependents[:10])
        more = f" and {len(self.dependents) - 10} more" if len(self.dependents) > 10 else ""
        super().__init__(
            key,
            None,
            0,
            f"{key} is referenced by {shown}{more}; delete those first or use cascade=True",
        )


class NotFoundError(SchemaCacheError, KeyError):
    """The key does not exist in the registry."""

    def __init__(self, key: str):
        self.key = key
        super().__init__(key)

    def __str__(self) -> str:
        return f"{self.key} not found"


class CompactedError(SchemaCacheError):
    """A watch asked for history the registry has compacted away.

    :param compact_revision: the oldest revision still available; watch from a
        full listing instead.
    """

    def __init__(self, compact_revision: int, requested: int | None = None):
        self.compact_revision = compact_revision
        self.requested = requested
        detail = f" (requested {requested})" if requested is not None else ""
        super().__init__(f"revision compacted up to {compact_revision}{detail}")


class RegistryRewoundError(SchemaCacheError):
    """The registry went back in time: its revision is below one already seen
    (a backup restored under running processes).

    :param revision: the registry's revision now.
    :param seen: the revision already seen (a watch's cursor, a node's
        received revision).
    """

    def __init__(self, revision: int, seen: int, diverged: bool = False):
        self.revision = revision
        self.seen = seen
        self.diverged = diverged
        """The registry is not below ``seen``, but its change at ``seen`` is
        another one: a backup restored and written past ``seen`` since."""
        if diverged:
            text = (f"the registry's change at revision {seen} is not the one already "
                    f"seen there (registry at {revision}): the registry was rewound and "
                    "written past it (a backup restored?)")
        else:
            text = (f"registry revision {revision} is below revision {seen} already "
                    "seen: the registry was rewound (a backup restored?)")
        super().__init__(text)


class RegistryUnavailableError(SchemaCacheError):
    """The registry cannot be reached right now; the call may succeed later."""


class RegistryAccessError(RegistryUnavailableError):
    """The registry answers but refuses us; retrying the same call will not help
    until an operator fixes the credentials, certificates or roles."""


class RegistryAuthError(RegistryAccessError):
    """The registry refused the credentials: wrong password or unknown user."""


class RegistryPermissionError(RegistryAccessError):
    """The registry knows the user, but its roles do not allow the operation."""


class RegistryTlsError(RegistryUnavailableError):
    """The TLS handshake with the registry failed: a certificate either side
    rejects, or TLS against a plaintext port.  Retried like any connection
    failure, since a member dying mid-handshake looks the same for a moment."""


class ValidationError(SchemaCacheError, ValueError):
    """A resource or manifest is invalid.

    :param message: what is wrong.
    :param field: dotted path of the offending field (``spec.entity.tag_names[0]``),
        or ``None`` when the whole document is at fault.
    :param document: which document of a manifest (1-based), if known.
    :param source: the file the manifest came from, if any.
    """

    def __init__(
        self,
        message: str,
        field: str | None = None,
        document: int | None = None,
        source: str | None = None,
    ):
        self.reason = message
        self.field = field
        self.document = document
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.source] if self.source else []
        if self.document is not None:
            parts.append(f"document {self.document}")
        if self.field:
            parts.append(f"field {self.field!r}")
        where = ", ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason


class PermanentError(SchemaCacheError):
    """Raised by a handler when retrying the same version can never succeed.

    The node records the failure at once instead of spending more attempts.
    """


class TemporaryError(SchemaCacheError):
    """Raised by a handler for a failure worth retrying (any other exception is too).

    :param delay: seconds to wait before the next attempt, instead of the
        backoff (default ``None``: the backoff); capped by the retry policy's
        cap.  It does not add attempts: ``max_attempts`` still bounds them.
    """

    def __init__(self, *args: object, delay: float | None = None):
        super().__init__(*args)
        if delay is not None and not delay >= 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay


class TooLargeError(SchemaCacheError):
    """A write is larger than the registry takes in one transaction; nothing was written.

    :param message: what is too large, the limit and how to raise it.
    """
