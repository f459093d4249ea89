"""Small shared helpers: atomic I/O, seeding and sharded randomness."""
