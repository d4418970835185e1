"""qsit in the browser: upload a photo, see its score and the model's explanation, then ask about it.

Run with ``qsit ui`` (or ``streamlit run ui/app.py``). The model is chosen in
the sidebar and loaded once per server (``st.cache_resource``); everything
about the image goes through ``qsit.Assessor``.
"""

from __future__ import annotations

import hashlib
import io
import os

import streamlit as st

from qsit.levels import LEVELS
from qsit.prompts import PRESETS

AS_TRAINED = "as trained"
NO_TEXT = "_(the model gave no text)_"
EXAMPLES = {"pagoda (scikit-learn sample photo)": "china.jpg", "dahlia (scikit-learn sample photo)": "flower.jpg"}


@st.cache_resource(show_spinner=False)
def get_assessor(model: str, preset: str | None):
    from qsit.assessor import Assessor

    return Assessor.from_pretrained(model, preset=preset)


def example_bytes(filename: str) -> bytes:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    Image.fromarray(load_sample_image(filename)).save(buf, format="PNG")
    return buf.getvalue()


def choose_model() -> str | None:
    from qsit.assessor import DEFAULT_MODEL_DIR, MODEL_ENV

    st.sidebar.header("Model")
    options = []
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        options.append("embedded default (qsit-tiny)")
    options += ["local checkpoint", "hub id"]
    kind = st.sidebar.radio("Source", options, index=0)
    if kind.startswith("embedded"):
        return str(DEFAULT_MODEL_DIR)
    default = os.environ.get(MODEL_ENV, "") if kind == "local checkpoint" else "zhangzicheng/q-sit"
    value = st.sidebar.text_input("Checkpoint folder" if kind == "local checkpoint" else "Hub id", value=default)
    return value.strip() or None


def probability_chart(probabilities: dict):
    import altair as alt
    import pandas as pd

    data = pd.DataFrame({"level": list(LEVELS), "probability": [probabilities[lv] for lv in LEVELS]})
    return (alt.Chart(data).mark_bar().encode(
        x=alt.X("level", sort=list(LEVELS), title=None),
        y=alt.Y("probability", scale=alt.Scale(domain=[0, 1])),
        tooltip=["level", alt.Tooltip("probability", format=".3f")],
    ).properties(height=220))


def main() -> None:
    from qsit.assessor import ModelLoadError
    from qsit.images import ImageLoadError
    from qsit.report import render

    st.set_page_config(page_title="qsit — image quality", layout="wide")
    st.title("Image quality, scored and explained")

    model = choose_model()
    if not model:
        st.warning("No model chosen: give a LLaVA-OneVision checkpoint folder or hub id in the sidebar.")
        st.stop()
    choice = st.sidebar.selectbox("Prompts", [AS_TRAINED, *PRESETS], key="preset",
                                  help="the checkpoint's own prompts (qsit_model.json), or another preset")
    preset = None if choice == AS_TRAINED else choice
    try:
        with st.spinner(f"Loading {model} …"):
            assessor = get_assessor(model, preset)
    except ModelLoadError as e:
        st.error(str(e))
        st.stop()
    st.sidebar.caption(f"Running on **{assessor.device}** ({str(assessor.dtype).removeprefix('torch.')})")

    upload = st.file_uploader("Upload an image", type=["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"])
    example = st.selectbox("… or pick an example", ["(none)", *EXAMPLES], key="example")
    if upload is not None:
        data, name = upload.getvalue(), upload.name
    elif example != "(none)":
        data, name = example_bytes(EXAMPLES[example]), example
    else:
        st.info("Upload a photo (or pick an example) to get its quality score and an explanation.")
        st.stop()

    try:
        loaded = assessor.load(data, name=name)
    except ImageLoadError as e:
        st.error(f"That file cannot be assessed: {e}")
        st.stop()

    key = hashlib.sha256(data).hexdigest()[:16] + f"|{model}|{preset}"
    results = st.session_state.setdefault("assessments", {})
    if key not in results:
        with st.spinner("Scoring and explaining …"):
            results[key] = assessor.assess(loaded)
    a = results[key]

    left, right = st.columns([1, 1])
    with left:
        st.image(loaded.image, caption=name, width="stretch")
        for note in loaded.notes:
            st.info(note)
    with right:
        st.metric("Quality score (1 bad … 5 excellent)", f"{a.score:.2f}", help="Σ p(level) · level value")
        st.markdown(f"Most likely level: **{a.level}** · spread ±{a.spread:.2f}")
        st.altair_chart(probability_chart(a.probabilities), width="stretch")
    st.subheader("Explanation")
    st.markdown(a.explanation or NO_TEXT)
    st.download_button("Download report (HTML)", render([a], "html", thumbnails=[loaded.image]),
                       file_name="qsit-report.html", mime="text/html")

    st.subheader("Ask about this image")
    chats = st.session_state.setdefault("chats", {})
    history = chats.setdefault(key, [])
    for turn in history:
        with st.chat_message(turn["role"]):
            st.markdown(turn["content"])
    question = st.chat_input("e.g. Is the sky overexposed? How could I fix the blur?")
    if question:
        history.append({"role": "user", "content": question})
        with st.chat_message("user"):
            st.markdown(question)
        # The model sees its own description first, then the follow-ups.
        context = [{"role": "user", "content": assessor.preset.describe_question},
                   {"role": "assistant", "content": a.explanation or "I could not describe it."}, *history]
        with st.chat_message("assistant"):
            answer = st.write_stream(assessor.stream_chat(loaded, context, max_new_tokens=256))
            answer = answer if isinstance(answer, str) else "".join(answer)
            if not answer:
                st.markdown(NO_TEXT)
        history.append({"role": "assistant", "content": answer or NO_TEXT})


main()
