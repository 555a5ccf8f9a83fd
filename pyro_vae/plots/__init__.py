"""Pictures (PNG files written with matplotlib's Agg backend, so no screen is needed)."""
import matplotlib

matplotlib.use("Agg")
