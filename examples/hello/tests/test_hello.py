import pathlib
import sys
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "app"))

import hello  # noqa: E402


class RespondTest(unittest.TestCase):
    def test_health(self):
        self.assertEqual(hello.respond("/healthz"), (200, {"status": "ok"}))

    def test_root_names_the_version(self):
        status, body = hello.respond("/")
        self.assertEqual(status, 200)
        self.assertEqual(body["message"], "hello")
        self.assertIn("version", body)

    def test_error_rate_fails_that_share_of_requests(self):
        self.assertEqual(hello.respond("/", error_rate=0.5, roll=lambda: 0.4)[0], 500)
        self.assertEqual(hello.respond("/", error_rate=0.5, roll=lambda: 0.6)[0], 200)

    def test_unknown_path(self):
        self.assertEqual(hello.respond("/nope")[0], 404)


if __name__ == "__main__":
    unittest.main()
