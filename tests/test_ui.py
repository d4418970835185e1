"""The Streamlit app, driven by Streamlit's own test harness with a tiny model."""

import io
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import noise_image

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")


def png_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def app(monkeypatch, tiny_checkpoint):
    monkeypatch.setenv("QSIT_MODEL", tiny_checkpoint)
    monkeypatch.setattr("qsit.assessor.DEFAULT_MODEL_DIR", Path("/nonexistent"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def test_upload_score_explain_chat_and_bad_upload(app, tiny_checkpoint):
    from qsit.assessor import Assessor

    expected = Assessor.from_pretrained(tiny_checkpoint)
    assert "Upload a photo" in app.info[0].value
    app.file_uploader[0].set_value(("photo.png", png_bytes(noise_image(60, 90, seed=4)), "image/png"))
    app.run()
    assert not app.exception, app.exception
    want = expected.assess(noise_image(60, 90, seed=4))
    assert float(app.metric[0].value) == pytest.approx(want.score, abs=0.005)
    assert any(f"Most likely level: **{want.level}**" in m.value for m in app.markdown)
    assert any(m.value == (want.explanation or "_(the model gave no text)_") for m in app.markdown)
    assert app.get("download_button")

    app.chat_input[0].set_value("Is the image blurry?")
    app.run()
    assert not app.exception, app.exception
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    assert app.chat_message[0].markdown[0].value == "Is the image blurry?"
    context = [{"role": "user", "content": expected.preset.describe_question},
               {"role": "assistant", "content": want.explanation or "I could not describe it."},
               {"role": "user", "content": "Is the image blurry?"}]
    reply = expected.chat(noise_image(60, 90, seed=4), context, max_new_tokens=256)
    assert app.chat_message[1].markdown[0].value == (reply or "_(the model gave no text)_")

    app.file_uploader[0].set_value(("notes.jpg", b"this is not an image", "image/jpeg"))
    app.run()
    assert not app.exception
    assert "cannot be assessed" in app.error[0].value and "not a recognised image format" in app.error[0].value


def test_example_image_and_missing_model(app, monkeypatch):
    app.selectbox(key="example").set_value("pagoda (scikit-learn sample photo)")
    app.run()
    assert not app.exception and float(app.metric[0].value) >= 1
    monkeypatch.setenv("QSIT_MODEL", "/no/such/checkpoint")
    fresh = AppTest.from_file(APP, default_timeout=180)
    fresh.run()
    assert not fresh.exception and "cannot load model" in fresh.error[0].value
