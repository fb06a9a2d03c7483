"""What a pass did and what it declined, for `edgec optimize`, `compile` and the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassReport:
    name: str
    rewrites: dict[str, int] = field(default_factory=dict)
    declined: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.rewrites)

    def count(self, what: str, n: int = 1) -> None:
        self.rewrites[what] = self.rewrites.get(what, 0) + n

    def decline(self, node: str, why: str) -> None:
        self.declined.append(f"{node}: {why}")

    def summary(self) -> str:
        done = ", ".join(f"{what} {n}" for what, n in sorted(self.rewrites.items()))
        line = f"{self.name}: {done or 'no change'}"
        if self.declined:
            line += f"; declined {len(self.declined)} ({'; '.join(self.declined[:3])}"
            line += ", …)" if len(self.declined) > 3 else ")"
        return line

    def to_json(self) -> dict:
        return {"name": self.name, "rewrites": self.rewrites, "declined": self.declined}
