"""The thin HTTP gateway for municipalities: authenticate, parse, forward over RPC, answer."""
