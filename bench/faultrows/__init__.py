"""The rows of the fault table (bench/faults.py), in table order. Each module makes one kind of
fault and measures what it cost each relay; `common` holds what they share, `report` writes
RELIABILITY.md."""

from . import badimage, kill, loss, pgrestart, soak, stalls, upgrades, vanish

ROWS = [
    *loss.rows(),
    *vanish.rows(),
    *stalls.rows(),
    *pgrestart.rows(),
    *upgrades.rows(),
    *badimage.rows(),
    *kill.rows(),
    *soak.rows(),
]
