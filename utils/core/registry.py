"""Name -> class tables for methods and regimes."""


class Registry(dict):
    """``register(cls)`` files a class under ``cls.name`` (usable as a decorator); ``register(cls, style)`` files
    it as the variant of that name which a run's style setting selects (PGD's ``--attack-style original``).
    ``lookup(name, style)`` finds the variant, else the class of the name, or raises a ``ValueError`` that lists
    what is registered. Iterating yields the names and their plain classes."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind, self.styles = kind, {}

    def register(self, cls: type, style: str = "") -> type:
        if not getattr(cls, "name", ""):
            raise ValueError(f"{cls.__name__} needs a name to be registered as a {self.kind}")
        if style:
            self.styles[cls.name, style] = cls
        else:
            self[cls.name] = cls
        return cls

    def lookup(self, name: str, style: str = "") -> type:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self)}")
        return self.styles.get((name, style), self[name])
