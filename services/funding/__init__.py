"""Who is funded: guarantee, reserve, pool, release and the reserve deadline, on a ledger."""
