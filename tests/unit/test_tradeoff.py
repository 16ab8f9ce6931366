import pytest

from tasks.plots import tradeoff_png
from tasks.tradeoff import Point, pareto_front, recommend


def test_knee_of_a_convex_front_and_dominated_points_dropped():
    # JD falls and FAD rises with tau_init; (0.9) is dominated by (1.0) (worse on both).
    pts = [Point(0.0, 0.90, 5.0), Point(0.3, 0.60, 6.0), Point(0.5, 0.20, 8.0), Point(0.7, 0.10, 20.0),
           Point(0.9, 0.08, 40.0), Point(1.0, 0.05, 39.0)]
    front = pareto_front(pts)
    assert [p.t_init for p in front] == [1.0, 0.7, 0.5, 0.3, 0.0]
    rec = recommend(pts)
    assert rec.t_init == 0.5  # the elbow: most of the JD gained for little FAD
    assert "knee" in rec.rule


def test_recommendation_edge_cases_and_plot():
    assert recommend([Point(0.4, 0.3, 10.0)]).t_init == 0.4
    assert recommend([Point(0.4, 0.3, 10.0), Point(0.6, 0.3, 10.0)]).t_init == 0.6  # tie: larger tau_init
    with pytest.raises(ValueError, match="nothing to recommend"):
        recommend([Point(0.4, float("nan"), 1.0)])
    png = tradeoff_png({"1": [(0.2, 0.8, 5.0), (0.5, 0.3, 9.0), (0.8, 0.1, 30.0)]}, recommended={"1": 0.5})
    import io

    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300  # decodes to a real figure
    ink = (img[..., :3] < 0.5).mean()  # dark pixels: axes, text, curves
    assert 0.005 < ink < 0.5, ink


def test_fad_trend_says_where_fad_falls_and_where_it_rises_again():
    from tasks.tradeoff import fad_trend

    falls = fad_trend({1.0: 27.6, 0.8: 25.4, 0.6: 28.6, 0.4: 19.1, 0.0: 39.1})
    assert falls.startswith("FAD falls from 27.6 (the guide, tau_init=1) to 19.1 at tau_init=0.4")
    assert "then rises to 39.1 at tau_init=0" in falls
    monotone = fad_trend({1.0: 30.0, 0.5: 20.0, 0.0: 10.0})
    assert monotone == "FAD falls from 30.0 (the guide, tau_init=1) to 10.0 at tau_init=0."
    assert fad_trend({1.0: 27.6, 0.4: 61.6, 0.0: 53.3}).startswith("FAD does not fall below the guide's (27.6)")
    assert fad_trend({0.4: 1.0, 0.0: 2.0}) is None and fad_trend({1.0: 3.0}) is None
