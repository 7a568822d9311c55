"""Name -> class tables for methods and regimes."""


class Registry(dict):
    """``register(cls)`` files a class under ``cls.name`` (usable as a decorator); ``lookup(name)`` finds it or
    raises a ``ValueError`` that lists what is registered."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type) -> type:
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__name__} needs a name to be registered as a {self.kind}")
        self[cls.name] = cls
        return cls

    def lookup(self, name: str) -> type:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self)}")
        return self[name]
