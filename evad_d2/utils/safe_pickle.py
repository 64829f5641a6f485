"""Reading pickles that users pass in, without running code from them.

``pickle.load`` calls whatever callable a file names, so a crafted ``.pkl`` runs a shell command
on load. :func:`restricted_load` resolves only the globals of an explicit allow-list and refuses
any other with :class:`UnsafePickleError` naming the file and the global. The lists below admit
what the field's data pickles hold:

| list | admits | why |
|---|---|---|
| :data:`NUMPY_GLOBALS` | numpy arrays, dtypes and scalars (numpy 1 and 2 module names) | arrays pickle as ``_reconstruct(ndarray, ...)`` + ``dtype`` + ``__setstate__`` (protocol 5: ``_frombuffer``) |
| :data:`BUILTIN_GLOBALS` | ``set``, ``frozenset``, ``slice``, ``complex``, ``bytes``, ``bytearray``, ``OrderedDict``, ``_codecs.encode`` | containers and the bytes of Python-2-style pickles (``encode(str, "latin1")``, ``bytes()``); none runs code |

Containers, numbers, strings and bytes need no global at all. Anything else (``os.system``,
``builtins.eval``, a class with a ``__reduce__``) is refused before it is called.
"""

import io
import os
import pickle
from typing import BinaryIO, FrozenSet, Iterable, Tuple, Union

__all__ = [
    "BUILTIN_GLOBALS",
    "NUMPY_GLOBALS",
    "UnreadablePickleError",
    "UnsafePickleError",
    "restricted_load",
]

Global = Tuple[str, str]

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")

NUMPY_GLOBALS: FrozenSet[Global] = frozenset(
    [(m, name) for m in _NUMPY_MODULES for name in ("_reconstruct", "scalar")]
    # protocol 5 pickles contiguous arrays as numeric._frombuffer(bytes, dtype, shape, order).
    + [(m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    # numpy 2 pickles dtypes by their class, e.g. numpy.dtypes.Float32DType.
    + [("numpy.dtypes", name) for name in (
        "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType",
        "UInt8DType", "UInt16DType", "UInt32DType", "UInt64DType",
        "Float16DType", "Float32DType", "Float64DType", "StrDType", "BytesDType",
    )]
)

BUILTIN_GLOBALS: FrozenSet[Global] = frozenset(
    # bytes: protocols 0-2 pickle b"" (an empty array's data) as a call of bytes().
    [("builtins", n) for n in ("set", "frozenset", "slice", "complex", "bytes", "bytearray")]
    + [("__builtin__", n) for n in ("set", "frozenset", "slice", "complex", "bytes", "bytearray")]
    + [("collections", "OrderedDict"), ("_codecs", "encode")]
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside the allow-list (it would run code or build an object
    this reader does not admit), or one that cannot be read at all."""


class UnreadablePickleError(UnsafePickleError):
    """A file that is not a readable pickle at all (empty, truncated, text): damaged rather than
    refused, so that callers can tell the two apart."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, *, allowed: FrozenSet[Global], source: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in self._allowed:
            raise UnsafePickleError(
                f"{self._source}: refused to load: the pickle needs the global '{module}.{name}', "
                "which this reader does not admit (it could run code). Only containers, numbers, "
                "strings and numpy arrays are read from a pickle; if you trust the file, re-save "
                "its contents as plain dicts of numpy arrays."
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refused to load: the pickle uses persistent ids ({pid!r})")


def restricted_load(
    file: Union[str, os.PathLike, BinaryIO, bytes],
    *,
    allowed: Iterable[Global] = NUMPY_GLOBALS | BUILTIN_GLOBALS,
    source: str = "",
    encoding: str = "latin1",
):
    """Unpickle ``file`` admitting only the globals in ``allowed``.

    Args:
        file: a path, an open binary file, or the pickle's bytes.
        allowed: ``(module, name)`` pairs that may be resolved; default numpy arrays + builtins.
        source: name of the file for error messages (default: the path, or ``"<pickle>"``).
        encoding: for Python 2 ``str`` objects; ``latin1`` reads numpy arrays pickled by Python 2.

    Raises:
        UnsafePickleError: a global outside ``allowed``, or (:class:`UnreadablePickleError`, a
            subclass) a file that is not a readable pickle (truncated, empty, not a pickle); the
            message names ``source``.
    """
    allowed = frozenset(allowed)
    if isinstance(file, (str, os.PathLike)):
        source = source or os.fspath(file)
        with open(file, "rb") as f:
            return restricted_load(f, allowed=allowed, source=source, encoding=encoding)
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    source = source or "<pickle>"
    try:
        return _RestrictedUnpickler(file, allowed=allowed, source=source, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise UnreadablePickleError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None
