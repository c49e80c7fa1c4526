"""AthenaK input decks: the ``PAR_DUMP`` text embedded in every ``.bin`` file (or an
``.athinput`` file), parsed into ``{block: {key: value}}``.

Format (AthenaK ``ParameterInput::ParameterDump``): ``<block>`` lines open a block; ``key = value
# comment`` lines fill it; ``#`` starts a comment; the dump is framed by dashed ``PAR_DUMP`` lines
and ends with ``<par_end>``. Values are converted to ``int``, ``float`` or ``bool`` when they
parse as such, else kept as stripped strings.

Parameter names differ across AthenaK versions and problem generators; :data:`PARAM_SPELLINGS`
lists the known ``block/key`` spellings for each physical parameter, and :func:`sim_params`
reports which one was found.
"""

from __future__ import annotations

from typing import Any

Deck = dict[str, dict[str, Any]]

#: physical parameter -> accepted ``block/key`` spellings, first match wins.
PARAM_SPELLINGS: dict[str, tuple[str, ...]] = {
    "nu": (
        "mhd/nu_iso",
        "mhd/viscosity",
        "mhd/nu",
        "hydro/nu_iso",
        "hydro/viscosity",
        "problem/nu",
    ),
    "eta": ("mhd/eta_ohm", "mhd/ohmic_resistivity", "mhd/eta", "problem/eta"),
    "seed": (
        "problem/rseed",
        "problem/rand_seed",
        "problem/random_seed",
        "problem/seed",
        "problem/iseed",
    ),
    "qshear": ("shearing_box/qshear", "problem/qshear", "problem/q"),
    "omega0": ("shearing_box/omega0", "problem/omega0", "problem/Omega0", "problem/omega"),
    "beta": ("problem/beta",),
    "cs": ("mhd/iso_sound_speed", "hydro/iso_sound_speed", "problem/iso_sound_speed"),
    "amp_vel": ("problem/amp_vel",),
    "amp": ("problem/amp",),
    "ifield": ("problem/ifield",),
    "nx1": ("mesh/nx1",),
    "nx2": ("mesh/nx2",),
    "nx3": ("mesh/nx3",),
    "x1min": ("mesh/x1min",),
    "x1max": ("mesh/x1max",),
    "x2min": ("mesh/x2min",),
    "x2max": ("mesh/x2max",),
    "x3min": ("mesh/x3min",),
    "x3max": ("mesh/x3max",),
    "meshblock_nx1": ("meshblock/nx1",),
    "meshblock_nx2": ("meshblock/nx2",),
    "meshblock_nx3": ("meshblock/nx3",),
    "nghost": ("mesh/nghost",),
    "tlim": ("time/tlim",),
    "basename": ("job/basename",),
    "problem": ("comment/problem",),
}


def convert_value(raw: str) -> Any:
    """``"3.0e-5"`` -> 3e-05, ``"64"`` -> 64, ``"true"`` -> True; anything else stays a string."""
    s = raw.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def parse_deck(text: str) -> Deck:
    """Parse AthenaK deck text into ``{block: {key: value}}``.

    Lines before the first ``<block>``, blank lines, comment lines and the ``<par_end>`` marker
    are ignored; a key repeated inside a block keeps its last value (AthenaK's own rule).

    Raises:
        ValueError: a non-comment line inside a block has no ``=`` (the caller adds the path).
    """
    deck: Deck = {}
    block: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("<"):
            name = s[1 : s.index(">")] if ">" in s else s[1:]
            if name == "par_end":
                break
            block = name.strip()
            deck.setdefault(block, {})
            continue
        if block is None:
            continue
        body = s.split("#", 1)[0]
        if "=" not in body:
            raise ValueError(f"deck line {lineno}: expected 'key = value', got {line!r}")
        key, value = body.split("=", 1)
        deck[block][key.strip()] = convert_value(value)
    return deck


def lookup(deck: Deck, spellings: tuple[str, ...]) -> tuple[Any, str | None]:
    """First ``block/key`` of ``spellings`` present in ``deck``: ``(value, "block/key")`` or ``(None, None)``."""
    for sp in spellings:
        block, key = sp.split("/", 1)
        if block in deck and key in deck[block]:
            return deck[block][key], sp
    return None, None


def sim_params(deck: Deck) -> tuple[dict[str, Any], dict[str, str]]:
    """Physical parameters of a run and where each was found.

    Returns:
        ``(params, sources)``: ``params[name]`` for every name of :data:`PARAM_SPELLINGS` present in
        the deck (absent ones are omitted), and ``sources[name] = "block/key"`` (the spelling
        found, e.g. ``"mhd/nu_iso"`` or ``"mhd/viscosity"``).
    """
    params: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, spellings in PARAM_SPELLINGS.items():
        value, where = lookup(deck, spellings)
        if where is not None:
            params[name] = value
            sources[name] = where
    return params, sources
