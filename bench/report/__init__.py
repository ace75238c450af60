"""What the store is rendered into: the leaderboard pages, their plots and gate figures."""
