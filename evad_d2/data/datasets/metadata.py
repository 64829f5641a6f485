"""Dataset metadata some of whose fields are read from files on first use."""
from typing import Callable, Sequence

from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

__all__ = ["LazyMetadata", "fresh_metadata"]


class LazyMetadata(Metadata):
    """Metadata some of whose fields come from files, read the first time one of them is used.

    Registration then touches no file, and a dataset generated after registration still gets
    its classes. ``_lazy`` holds (the lazy keys, a picklable function returning them all).
    """

    def __getattr__(self, key):
        lazy = self.__dict__.get("_lazy")
        if lazy is not None and key in lazy[0]:
            values = lazy[1]()
            self.__dict__.update(values)
            del self.__dict__["_lazy"]
            return values[key]
        return super().__getattr__(key)

    def set_lazy(self, keys: Sequence[str], loader: Callable[[], dict]) -> "LazyMetadata":
        """Make ``keys`` lazy: the first access to any of them calls ``loader()``, which returns
        a dict of all of them. Returns self."""
        self.__dict__["_lazy"] = (tuple(keys), loader)
        return self


def fresh_metadata(name: str) -> LazyMetadata:
    """Put an empty :class:`LazyMetadata` into ``MetadataCatalog`` under ``name`` and return it.

    Raises:
        ValueError: metadata of ``name`` already holds fields (set before its dataset was
            registered); they would be silently lost.
    """
    if name in MetadataCatalog.keys():
        if len(MetadataCatalog.get(name).as_dict()) > 1:
            raise ValueError(f"metadata of '{name}' was set before its dataset was registered; remove it first")
        MetadataCatalog.remove(name)
    meta = LazyMetadata(name=name)
    MetadataCatalog[name] = meta
    return meta
