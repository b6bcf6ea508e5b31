"""A misbehaving stand-in for the engine (failure injection for the add-on's tests only)."""
