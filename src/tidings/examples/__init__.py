"""Examples shipped with the package, so that ``tidings demo`` runs from an installed copy."""
