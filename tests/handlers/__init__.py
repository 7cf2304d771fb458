"""Handlers written by a "team" to the seed's contract, loaded by real workers in the tests."""
