"""A table of named columns, without pandas: what the terminal path computes and prints.

``yolobn inspect`` builds its statistics, summary, ranking and terminal table from these columns and
never imports pandas (about a third of a second on every run). The Python API still hands out
pandas DataFrames (``Inspection.layers``/``.channels``): ``to_frame`` builds one on demand, from the
same lists and arrays, so its dtypes are the ones pandas infers for them.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Table"]


class Table:
    """Columns of equal length, in order: lists or 1-D numpy arrays.

    Args:
        columns: name -> values. The values are kept as given (``to_frame`` passes them to pandas
            unchanged); ``table[name]`` is a numpy array of them.
        frame: the DataFrame these columns came from, when they did (``from_frame``): returned by
            ``to_frame`` as it is.
        rows: the row mappings these columns came from, when they did (``from_rows``): ``to_frame``
            builds the frame from them, as ``pd.DataFrame(rows)`` infers each column's dtype.
    """

    def __init__(
        self,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        frame: Any = None,
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self._cols = dict(columns)
        self._arrays: dict[str, np.ndarray] = {}
        self._frame = frame
        self._rows = rows
        lengths = {len(v) for v in self._cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self._n = lengths.pop() if lengths else 0

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Table:
        """One row per mapping (missing keys are None), in the order of ``columns``."""
        return cls({c: [r.get(c) for r in rows] for c in columns}, rows=rows)

    @classmethod
    def from_frame(cls, df: Any) -> Table:
        """The columns of a pandas DataFrame (kept: ``to_frame`` gives it back)."""
        return cls({str(c): df[c].to_numpy() for c in df.columns}, frame=df)

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __getitem__(self, name: str) -> np.ndarray:
        a = self._arrays.get(name)
        if a is None:
            v = self._cols[name]
            a = v if isinstance(v, np.ndarray) else _array(v)
            self._arrays[name] = a
        return a

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self._cols else default

    def take(self, index: Sequence[int] | np.ndarray) -> Table:
        """The rows at ``index``, in that order."""
        idx = np.asarray(index, dtype=np.int64)
        if self._frame is not None:
            return Table.from_frame(self._frame.iloc[idx].reset_index(drop=True))
        if self._rows is not None:
            return Table.from_rows([self._rows[i] for i in idx.tolist()], self.columns)
        return Table({c: self[c][idx] for c in self._cols})

    def filter(self, mask: Sequence[bool] | np.ndarray) -> Table:
        return self.take(np.flatnonzero(np.asarray(mask, dtype=bool)))

    def head(self, n: int) -> Table:
        return self.take(np.arange(min(max(n, 0), self._n)))

    def itertuples(self) -> Iterator[Any]:
        """One named tuple per row, fields named as the columns."""
        row = namedtuple("Row", self.columns, rename=True)  # type: ignore[misc]
        arrays = [self[c] for c in self._cols]
        for i in range(self._n):
            yield row(*(_plain(a[i]) for a in arrays))

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts of plain Python values (``to_dict(orient="records")`` of the frame)."""
        names, arrays = self.columns, [self[c] for c in self._cols]
        return [{n: _plain(a[i]) for n, a in zip(names, arrays, strict=True)} for i in range(self._n)]

    def to_frame(self) -> Any:
        """The pandas DataFrame of these columns (pandas is imported here, on demand)."""
        if self._frame is None:
            import pandas as pd  # the Python API's tables; the terminal path never gets here

            if self._rows is not None:
                self._frame = pd.DataFrame(list(self._rows), columns=self.columns)
            else:
                self._frame = pd.DataFrame(self._cols, columns=self.columns)
        return self._frame


def _array(values: Sequence[Any]) -> np.ndarray:
    """Numbers and booleans as numeric arrays, anything else (text, None, mixed) as objects."""
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.asarray(values, dtype=bool)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        return np.asarray(values, dtype=np.int64)
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=np.float64)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
