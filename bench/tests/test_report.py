"""report.py: medians, ratios, verdicts and the table, on made-up samples (no servers)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gatebench import images, report  # noqa: E402
from gatebench.common import DIRECT, GATE, NGX_OFF, NGX_ON  # noqa: E402


def results(key, unit, better, target, samples):
    res = report.Results()
    res.row(key, key, unit, better, target)
    for t, vals in samples.items():
        for v in vals:
            res.add(key, t, v)
    return res


class MedianTest(unittest.TestCase):
    def test_scalar_median_ignores_none(self):
        self.assertEqual(report.median([3.0, None, 1.0, 2.0]), 2.0)
        self.assertEqual(report.median([4.0, 1.0]), 2.5)
        self.assertIsNone(report.median([None]))
        self.assertIsNone(report.median([]))

    def test_tuple_median_per_column(self):
        self.assertEqual(report.median([(1.0, 10.0), (3.0, 30.0), (2.0, None)]), (2.0, 20.0))

    def test_scalar_of_tuple_is_second(self):
        self.assertEqual(report.scalar((5.0, 12.0)), 12.0)
        self.assertEqual(report.scalar(7.0), 7.0)


class RatioTest(unittest.TestCase):
    def test_ratio(self):
        self.assertEqual(report.ratio(3.0, 2.0), 1.5)
        self.assertIsNone(report.ratio(None, 2.0))
        self.assertIsNone(report.ratio(1.0, 0))

    def test_best_nginx_up_takes_max(self):
        rows = report.summarize(results("pull.h1", "MB/s", "up", "≥ 1.5× nginx best", {
            GATE: [900, 1000, 1100], NGX_ON: [600, 600], NGX_OFF: [400], DIRECT: [2000]}))
        r = rows[0]
        self.assertEqual(r.nginx_best, NGX_ON)
        self.assertAlmostEqual(r.ratio_nginx, 1000 / 600)
        self.assertAlmostEqual(r.ratio_direct, 0.5)
        self.assertEqual(r.verdict, "met")

    def test_best_nginx_down_takes_min_and_misses(self):
        r = report.summarize(results("hs.401.rsa.cpu", "µs", "down", "≤ 0.8× nginx", {
            GATE: [900], NGX_OFF: [1000]}))[0]
        self.assertEqual(r.nginx_best, NGX_OFF)
        self.assertAlmostEqual(r.ratio_nginx, 0.9)
        self.assertTrue(r.verdict.startswith("MISSED (0.90× nginx; off by 12%"), r.verdict)

    def test_percent_clauses(self):
        r = report.summarize(results("a.rps", "req/s", "up", "≥ 30× nginx, ≥ 80% direct", {
            GATE: [60], NGX_ON: [2], DIRECT: [100]}))[0]
        self.assertEqual(r.verdict, "met, MISSED (60% of direct; off by 25%)")

    def test_le_nginx_best(self):
        r = report.summarize(results("cpu.h1", "s/GiB", "down", "≤ nginx best", {
            GATE: [0.5], NGX_ON: [0.6], NGX_OFF: [0.7]}))[0]
        self.assertEqual(r.verdict, "met")

    def test_memory_limit_uses_sum(self):
        r = report.summarize(results("conc.h1.rss", "MiB", "down", "≤ 32 MiB", {
            GATE: [(30.0, 30.0), (40.0, 40.0), (35.0, 35.0)]}))[0]
        self.assertEqual(r.verdict, "MISSED (35.0 MiB; +3.0 MiB)")

    def test_h2_vs_h1_twin(self):
        res = report.Results()
        res.row("conc.h1.time", "h1", "s", "down")
        res.row("conc.h2.time", "h2", "s", "down", "≤ HTTP/1.1")
        res.add("conc.h1.time", GATE, 10.0)
        res.add("conc.h2.time", GATE, 12.5)
        rows = report.summarize(res)
        self.assertEqual(rows[1].verdict, "MISSED (1.25× HTTP/1.1)")

    def test_failures(self):
        r = report.summarize(results("slow.h1.fail", "count", "down", "0", {GATE: [0, 0, 1]}))[0]
        self.assertEqual(r.verdict, "met")

    def test_no_gate_sample_no_verdict(self):
        r = report.summarize(results("x", "s", "down", "≤ nginx best", {NGX_ON: [1.0]}))[0]
        self.assertIsNone(r.ratio_nginx)
        self.assertIsNone(r.verdict)


class TableTest(unittest.TestCase):
    def test_table_cells(self):
        rows = report.summarize(results("rss", "MiB", "down", "≤ 32 MiB", {
            GATE: [(20.0, 20.0)], NGX_OFF: [(8.0, 20.5)]}))
        lines = report.table(rows).splitlines()
        self.assertEqual(len(lines), 3)
        self.assertIn("| 20.0 | — | 20.5 (8.0) | — | 0.98× | — | ≤ 32 MiB | met |", lines[2])

    def test_empty_rows_are_left_out(self):
        rows = report.summarize(results("nothing", "s", "down", None, {}))
        self.assertEqual(len(report.table(rows).splitlines()), 2)

    def test_fmt(self):
        self.assertEqual(report.fmt(12345.6, "req/s"), "12,346")
        self.assertEqual(report.fmt(0.0123, "s"), "0.012")
        self.assertEqual(report.fmt((1.234, 5.0), "p50/p99 ms"), "1.23/5.00")
        self.assertEqual(report.ratio_text(250.0), "250×")

    def test_json_round_trip_keys(self):
        rows = report.summarize(results("k", "s", "down", None, {GATE: [1.0]}))
        j = report.to_json({"date": "x"}, {"quick": True}, rows, ["e"])
        self.assertEqual(j["rows"][0]["median"][GATE], 1.0)
        self.assertEqual(j["errors"], ["e"])


class LayerSizesTest(unittest.TestCase):
    def test_geometric_spread(self):
        s = images.layer_sizes(20, 2 << 20, 100 << 20)
        self.assertEqual(len(s), 20)
        self.assertEqual(s[0], 2 << 20)
        self.assertEqual(s[-1], 100 << 20)
        self.assertEqual(s, sorted(s))
        self.assertEqual(images.layer_sizes(1, 1, 5), [5])


class SkopeoOptionsTest(unittest.TestCase):
    def test_sides(self):
        from gatebench.clients import skopeo_side
        self.assertEqual(skopeo_side("src", "dir:/x", "/c", "u:p"), [])
        self.assertEqual(skopeo_side("dest", "docker://h/r", None, None), ["--dest-tls-verify=false"])
        self.assertEqual(skopeo_side("src", "docker://h/r", "/c", "u:p"),
                         ["--src-cert-dir", "/c", "--src-creds", "u:p"])


if __name__ == "__main__":
    unittest.main()
