"""bench/run's option handling: --quick defaults, explicit values win, unknown names fail."""

import contextlib
import importlib.machinery
import importlib.util
import io
import os
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
_loader = importlib.machinery.SourceFileLoader("bench_run", os.path.join(os.path.dirname(HERE), "run"))
_spec = importlib.util.spec_from_loader("bench_run", _loader)
bench_run = importlib.util.module_from_spec(_spec)
_loader.exec_module(bench_run)


class ParseArgsTest(unittest.TestCase):
    def test_full_defaults(self):
        a = bench_run.parse_args([])
        self.assertEqual((a.rounds, a.duration, a.uploads, a.upload_mib, a.image_layers), (3, 8, 50, 64, 20))
        self.assertEqual(a.auth_users, ["c10", "c5", "apr1"])
        self.assertIn("skopeo", a.only)

    def test_quick_covers_every_workload_small(self):
        a = bench_run.parse_args(["--quick"])
        self.assertEqual(a.only, [w for w, _ in bench_run.WORKLOADS])
        self.assertEqual((a.rounds, a.duration, a.pull_mib, a.uploads), (1, 2, 128, 10))
        self.assertEqual(a.auth_users, ["c10"])

    def test_explicit_value_wins_over_quick(self):
        a = bench_run.parse_args(["--quick", "--rounds", "2", "--auth-users", "c5,apr1"])
        self.assertEqual(a.rounds, 2)
        self.assertEqual(a.auth_users, ["c5", "apr1"])

    def test_unknown_workload_fails(self):
        with contextlib.redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
            bench_run.parse_args(["--only", "pull,nope"])


if __name__ == "__main__":
    unittest.main()
