"""Bytewax dataflows over FACTURATION. The arithmetic lives here as pure functions (invoices.py); the flows
themselves (5-second totals, per-customer totals) are still to be written."""
