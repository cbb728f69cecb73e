"""The client-output parsers on outputs saved from real runs (bench/tests/samples/).

Run from the repository root: python3 -m unittest discover bench/tests
"""

from __future__ import annotations

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from gatebench import parsers  # noqa: E402


def sample(name: str) -> str:
    with open(os.path.join(HERE, "samples", name)) as f:
        return f.read()


class Curl(unittest.TestCase):
    def test_headers_of_post_then_write_out(self) -> None:
        status, h = parsers.curl_headers(sample("curl_post_202.txt"))
        self.assertEqual(status, 202)
        self.assertIn("/v2/bench/x/blobs/uploads/", h["location"])
        self.assertIn("docker-upload-uuid", h)
        self.assertGreater(float(sample("curl_post_202.txt").strip().splitlines()[-1]), 0)

    def test_nghttp_verbose_patch(self) -> None:
        status, h = parsers.nghttp_headers(sample("nghttp_patch_202.txt"))
        self.assertEqual(status, 202)
        self.assertIn("/v2/bench/exp/blobs/uploads/", h["location"])
        self.assertEqual(h["range"], "0-99999")
        self.assertNotIn("authorization", h, "request headers are sent, not received")
        self.assertEqual(parsers.nghttp_headers("[  0.001] Connected\n"), (None, {}))

    def test_last_response_wins(self) -> None:
        text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/2 201\r\ndocker-content-digest: sha256:ab\r\n\r\n\n0.25"
        self.assertEqual(parsers.curl_headers(text), (201, {"docker-content-digest": "sha256:ab"}))

    def test_no_response(self) -> None:
        self.assertEqual(parsers.curl_headers(""), (None, {}))

    def test_write_out(self) -> None:
        w = parsers.curl_write_out(sample("curl_w_401_h2.txt"), ["code", "size", "speed", "version"])
        self.assertEqual((w["code"], w["version"]), ("401", "2"))
        with self.assertRaises(parsers.ParseError):
            parsers.curl_write_out("401 12", ["code", "size", "speed", "version"])


class Wrk(unittest.TestCase):
    def test_200(self) -> None:
        r = parsers.wrk(sample("wrk_get_200.txt"))
        self.assertEqual((r.requests, r.rps, r.errors), (460, 219.86, 0))
        self.assertAlmostEqual(r.p50_ms or 0, 26.57)
        self.assertAlmostEqual(r.p99_ms or 0, 150.76)

    def test_401_counts_as_expected_when_not_2xx(self) -> None:
        text = sample("wrk_get_401.txt")
        ok = parsers.wrk(text, expect_2xx=False)
        self.assertEqual(ok.errors, 0)
        self.assertEqual(parsers.wrk(text, expect_2xx=True).errors, ok.requests)

    def test_latency_units(self) -> None:
        self.assertAlmostEqual(parsers.lat_ms("812.00us") or 0, 0.812)
        self.assertEqual(parsers.lat_ms("2.5s"), 2500)
        self.assertEqual(parsers.lat_ms("1m"), 60000)
        self.assertIsNone(parsers.lat_ms("fast"))

    def test_garbage(self) -> None:
        with self.assertRaises(parsers.ParseError):
            parsers.wrk("unable to connect to 127.0.0.1:1 Connection refused")


class Ab(unittest.TestCase):
    def test_keepalive_head(self) -> None:
        r = parsers.ab(sample("ab_head_keepalive.txt"), 200, sample("ab_head_keepalive.csv"))
        self.assertEqual((r.requests, r.errors, r.extra["keep_alive"]), (315, 0, 315))
        self.assertEqual(r.rps, 156.81)
        self.assertIsNotNone(r.p50_ms)
        self.assertIsNotNone(r.p99_ms)

    def test_new_connections_401_few_requests_use_the_tsv(self) -> None:
        text = sample("ab_get_newconn_401_small.txt")
        r = parsers.ab(text, 401, sample("ab_get_newconn_401_small.csv"),
                       sample("ab_get_newconn_401_small.tsv"))
        self.assertEqual((r.requests, r.errors, r.extra["keep_alive"]), (60, 0, -1))
        self.assertIsNotNone(r.p50_ms)
        # Expecting 200, all 401s are errors.
        self.assertEqual(parsers.ab(text, 200).errors, 60)

    def test_garbage(self) -> None:
        with self.assertRaises(parsers.ParseError):
            parsers.ab("apr_socket_connect(): Connection refused (111)", 200)


class AbNewConnection(unittest.TestCase):
    def test_more_non2xx_than_complete_is_not_negative(self):
        out = ("Complete requests:      370\nFailed requests:        0\nNon-2xx responses:      375\n"
               "Requests per second:    184.50 [#/sec] (mean)\n")
        r = parsers.ab(out, 401)
        self.assertEqual((r.requests, r.errors), (370, 0))
        self.assertEqual(parsers.ab(out.replace("375", "360"), 401).errors, 10)


class H2load(unittest.TestCase):
    def test_200(self) -> None:
        r = parsers.h2load(sample("h2load_get_200.txt"), sample("h2load_get_200.log"), 200)
        self.assertEqual((r.requests, r.errors, r.rps), (200, 0, 259.34))
        self.assertIsNotNone(r.p50_ms)

    def test_unexpected_status_is_an_error(self) -> None:
        r = parsers.h2load(sample("h2load_get_200.txt"), sample("h2load_get_200.log"), 401)
        self.assertEqual(r.errors, len(sample("h2load_get_200.log").splitlines()))

    def test_needs_h2(self) -> None:
        text = sample("h2load_get_200.txt").replace("Application protocol: h2", "No protocol negotiated")
        with self.assertRaises(parsers.ParseError):
            parsers.h2load(text, "", 200)


class Skopeo(unittest.TestCase):
    def test_copy(self) -> None:
        r = parsers.skopeo_copy(sample("skopeo_copy_fresh.txt"))
        self.assertEqual((r.copied, r.skipped, r.manifest_written), (3, 0, True))

    def test_skipped_blobs(self) -> None:
        text = "Copying blob sha256:aa skipped: already exists\nCopying blob sha256:bb done\n" \
               "Writing manifest to image destination\n"
        self.assertEqual(parsers.skopeo_copy(text), parsers.SkopeoCopy(1, 1, True))

    def test_garbage(self) -> None:
        with self.assertRaises(parsers.ParseError):
            parsers.skopeo_copy("FATA[0000] initializing source: no such image")


if __name__ == "__main__":
    unittest.main()
