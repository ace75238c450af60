"""Optional adapters of ChannelBench models to other frameworks (imported only by their users)."""
