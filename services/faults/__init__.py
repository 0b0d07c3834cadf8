"""`voxpop faults`: fault runs against the real embedded stack, written to docs/reliability.*"""
