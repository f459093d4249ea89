"""The foundation every layer builds on: errors, input checks, the threat model, config bases, registries."""
