"""Consumer framework for the tradevine.events exchange."""
