"""Live trend windows per watch and alert rules evaluated when a window closes (Faust app)."""
