"""Where library output goes while a stage runs: its log file, and stderr only with --verbose."""

from __future__ import annotations

import logging
import sys
import warnings

from polyrise.console import library_output


def test_library_output_goes_to_the_stage_log_and_with_verbose_to_stderr(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # transformers' own handler exists from here on
    for handler in logging.getLogger("transformers").handlers:
        if type(handler) is logging.StreamHandler:  # made under an earlier test's capture: write to this test's
            handler.setStream(sys.stderr)
    for verbose in (False, True):
        log = tmp_path / "logs" / f"verbose-{verbose}.log"
        messages = [f"a FutureWarning {verbose}", f"a transformers warning {verbose}", f"a trainer dict {verbose}"]
        with library_output(log, verbose):
            warnings.warn(messages[0], FutureWarning, stacklevel=1)
            hf_logging.get_logger("transformers.modeling_utils").warning(messages[1])
            logging.getLogger("polyrise.training").info(messages[2])
        out, err = capfd.readouterr()
        text = log.read_text()
        assert all(m in text for m in messages), text
        assert out == "" and all((m in err) == verbose for m in messages), err
    # afterwards transformers prints through its own handler again, and nothing more goes to the logs
    hf_logging.get_logger("transformers.modeling_utils").warning("after the stage")
    assert "after the stage" in capfd.readouterr().err
    assert not any("after the stage" in p.read_text() for p in (tmp_path / "logs").iterdir())
