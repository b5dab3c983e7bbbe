"""Tokenizer tab: how one text becomes tokens under several tokenizers, and a BPE trained here.

Left: a text box and, for each encoding (char, the current model's tokenizer, the BPEs trained
here, GPT-2 / cl100k_base / o200k_base where tiktoken can load them), the text cut into coloured
token spans with the ids and counts. Right: train a byte-level BPE on a corpus (in a job, with
progress and Cancel), browse its merges, hand it to the Training tab for the next model, and a
chart of bytes per token of every encoding on the current corpus.

Named encodings are loaded in a job (jobs.py), so a slow or missing network never blocks the window;
an encoding that cannot load is listed with the reason. Training a BPE is its own panel (bpe_panel.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app import dialogs
from app.state import AppState
from app.tabs.tokenizer.bpe_panel import BpePanel
from app.tabs.tokenizer.chart import BytesPerTokenChart
from app.tabs.tokenizer.jobs import (
    BytesPerToken,
    NamedEncodingsLoaded,
    bytes_per_token_job,
    named_encodings_job,
    sample_text,
)
from app.tabs.tokenizer.merges import MergesView
from app.tabs.tokenizer.spans import EncodingPanel, tokenize_for_display
from app.worker import JobRunner
from engine import (
    CharTokenizer,
    Tokenizer,
    merges_table,
)

NAMED_SHOWN = ("gpt2", "cl100k_base", "o200k_base")
DEFAULT_TEXT = (
    "Tokenizers cut text into pieces.  Common words stay whole; rare ones split:\n"
    "internationalization, naïve café, 12345 + 678 = 13023\n"
    "    def tokenize(text):  # code, with its indentation\n"
    "        return text.split()\n"
    "日本語のテキスト, emoji 🙂👍🏽 and <|endoftext|> as plain text."
)
REFRESH_MS = 250
MAX_TEXT_CHARS = 100_000  # characters of the text box that are tokenized and shown


@dataclass
class Encoding:
    """A row of the tab: a tokenizer, or a name and why it is unavailable."""

    key: str
    name: str
    tokenizer: Tokenizer | None
    reason: str = ""
    detail: str = ""


# ---------------------------------------------------------------- the tab

class TokenizerTab(QWidget):
    def __init__(self, state: AppState, runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.trained: list[Tokenizer] = []  # BPEs trained in this tab, oldest first
        self._named: list[Encoding] = [Encoding(n, n, None, "loading…") for n in NAMED_SHOWN]
        self._named_job = None
        self._named_requested = False
        self._chart_job = None
        self._chart_again = False
        self._chart_stale = True
        self._corpus_char: tuple[int, CharTokenizer] | None = None  # (id of the corpus, its char tokenizer)
        self.panels: dict[str, EncodingPanel] = {}
        self._encoded_by: dict[str, Tokenizer] = {}  # the tokenizer each panel's spans came from
        self._merge_items: list[tuple[str, Tokenizer]] = []

        self._build_ui()
        self._refresh_timer = QTimer(self, singleShot=True, interval=REFRESH_MS)
        self._refresh_timer.timeout.connect(self.refresh)
        self._chart_timer = QTimer(self, singleShot=True, interval=2 * REFRESH_MS)
        self._chart_timer.timeout.connect(self.update_chart)
        self.text.textChanged.connect(self._refresh_timer.start)
        self.show_ws.toggled.connect(self.refresh)

        state.model_changed.connect(self._on_model_changed)
        state.tokenizer_changed.connect(self._on_model_changed)
        state.corpus_changed.connect(self._on_corpus_changed)
        state.pending_tokenizer_changed.connect(self._update_use_button)
        self.refresh()

    # ------------------------------------------------------------ layout

    def _build_ui(self) -> None:
        self.text = QPlainTextEdit(DEFAULT_TEXT)
        self.text.setMaximumHeight(110)
        self.text.setToolTip("Type or paste any text: every encoding below updates as you type")
        self.show_ws = QCheckBox("Show whitespace")
        self.show_ws.setToolTip("Draw spaces as ·, tabs as → and newlines as ↵, so you can see which token holds them")
        self.sample_button = QPushButton("Corpus sample")
        self.sample_button.setToolTip("Put a passage of the current corpus in the box")
        self.sample_button.clicked.connect(self._use_corpus_sample)
        self.summary = QLabel()
        self.summary.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        options = QHBoxLayout()
        options.addWidget(self.show_ws)
        options.addWidget(self.sample_button)
        options.addStretch(1)
        options.addWidget(self.summary)

        self.rows = QWidget()
        self.rows_layout = QVBoxLayout(self.rows)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.setSpacing(6)
        self.rows_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.rows)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.text)
        lv.addLayout(options)
        lv.addWidget(scroll, 1)

        self.bpe = BpePanel(self.state, self.runner)
        self.bpe.trained.connect(self._on_bpe_trained)
        self.bpe.message.connect(self._notify)

        # Merges
        self.merges_of = QComboBox()
        self.merges_of.setToolTip("Whose merges to list")
        self.merges_of.currentIndexChanged.connect(self._show_merges)
        self.merges = MergesView()
        self.use_button = QPushButton("Use for the next model")
        self.use_button.setToolTip("The Training tab will build its next model from scratch with this tokenizer")
        self.use_button.clicked.connect(self.use_for_next_model)
        self.use_status = QLabel()
        self.use_status.setWordWrap(True)
        self.use_status.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        merges_box = QGroupBox("Merges")
        mv = QVBoxLayout(merges_box)
        mv.addWidget(self.merges_of)
        mv.addWidget(self.merges, 1)
        mv.addWidget(self.use_button)
        mv.addWidget(self.use_status)

        # Chart
        self.chart = BytesPerTokenChart()
        self.chart.setToolTip("Average bytes per token on a sample of the current corpus: more bytes per token "
                              "means shorter sequences, so more text fits in the context")
        chart_box = QGroupBox("Bytes per token")
        cv = QVBoxLayout(chart_box)
        cv.addWidget(self.chart)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.bpe)
        right.addWidget(merges_box)
        right.addWidget(chart_box)
        right.setStretchFactor(1, 1)
        right.setSizes([200, 360, 220])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setSizes([900, 400])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self._update_use_button()

    # ------------------------------------------------------------ encodings

    def encodings(self) -> list[Encoding]:
        """Every encoding row, in display order."""
        char = self._char_encoding()
        model_tok = self.state.tokenizer
        same_chars = (isinstance(model_tok, CharTokenizer) and char.tokenizer is not None
                      and model_tok.chars == char.tokenizer.chars)
        rows = [] if same_chars else [char]  # the model's own char tokenizer says the same
        if model_tok is not None:
            rows.append(Encoding("model", f"model: {model_tok.name}", model_tok,
                                 detail=f"{model_tok.vocab_size:,} tokens"))
        for i, tok in enumerate(self.trained):
            rows.append(Encoding(f"trained:{i}", tok.name, tok, detail=f"trained here · {tok.vocab_size:,} tokens"))
        for enc in self._named:
            detail = f"{enc.tokenizer.vocab_size:,} tokens" if enc.tokenizer is not None else ""
            rows.append(Encoding(f"named:{enc.key}", enc.name, enc.tokenizer, enc.reason, detail))
        return rows

    def _char_encoding(self) -> Encoding:
        corpus = self.state.corpus
        if corpus is None:
            tok = CharTokenizer.from_text(self.text.toPlainText())
            return Encoding("char", "char", tok, detail="characters of this text")
        if self._corpus_char is None or self._corpus_char[0] != id(corpus):
            self._corpus_char = (id(corpus), CharTokenizer.from_text(corpus.text()))
        tok = self._corpus_char[1]
        return Encoding("char", "char", tok, detail=f"characters of {corpus.name} · {tok.vocab_size:,} tokens")

    @Slot()
    def refresh(self) -> None:
        """Re-tokenize the text with every available encoding and rebuild the rows."""
        full = self.text.toPlainText()
        text = full[:MAX_TEXT_CHARS]  # beyond this the window would stall on every keystroke
        rows = self.encodings()
        keys = [r.key for r in rows]
        if list(self.panels) != keys:
            for panel in self.panels.values():
                panel.setParent(None)
                panel.deleteLater()
            self.panels = {}
            for row in rows:
                panel = EncodingPanel()
                self.rows_layout.insertWidget(self.rows_layout.count() - 1, panel)
                self.panels[row.key] = panel
        counts = []
        for row in rows:
            panel = self.panels[row.key]
            if row.tokenizer is None:
                panel.set_unavailable(row.name, row.reason or "unavailable")
                continue
            panel.set_title(row.name, row.detail)
            data = panel.data
            # Only the text or the tokenizer changing needs a new encoding (not the whitespace toggle).
            if data is None or data.text != text or self._encoded_by.get(row.key) is not row.tokenizer:
                try:
                    data = tokenize_for_display(row.tokenizer, text, row.name)
                except Exception as e:  # a broken tokenizer file must not take the tab down
                    panel.set_unavailable(row.name, f"could not encode: {e}")
                    continue
                self._encoded_by[row.key] = row.tokenizer
            panel.set_tokenized(data, self.show_ws.isChecked())
            counts.append(f"{row.name}: {data.num_tokens:,}")
        cut = f" (the first {MAX_TEXT_CHARS:,} of {len(full):,})" if len(full) > MAX_TEXT_CHARS else ""
        self.summary.setText(f"{len(text):,} characters{cut} · tokens — " + ", ".join(counts))

    def panel(self, name: str) -> EncodingPanel | None:
        """The row of an encoding by its shown name (or key)."""
        if name in self.panels:
            return self.panels[name]
        for row in self.encodings():
            if row.name == name:
                return self.panels.get(row.key)
        return None

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._named_requested:
            self._named_requested = True
            QTimer.singleShot(0, self.load_named_encodings)
            self._chart_stale = True
        if self._chart_stale:
            self._chart_timer.start()

    @property
    def named_loaded(self) -> bool:
        """The named encodings' job has answered (each loaded, or listed with the reason it cannot)."""
        return self._named_job is None and all(e.reason != "loading…" for e in self._named)

    @Slot()
    def load_named_encodings(self) -> None:
        """Ask tiktoken for the named encodings in a job (it may need the network or its cache)."""
        if self._named_job is not None:
            return
        self._named = [Encoding(n, n, None, "loading…") for n in NAMED_SHOWN]
        self.refresh()
        self._named_job = self.runner.start("tokenizer-named", named_encodings_job())
        self._named_job.events.connect(self._on_named_events)
        self._named_job.failed.connect(self._on_named_failed)
        self._named_job.finished.connect(self._on_named_finished)

    @Slot(list)
    def _on_named_events(self, events: list) -> None:
        for event in events:
            if not isinstance(event, NamedEncodingsLoaded):
                continue
            found = {name: (tok, reason) for name, tok, reason in event.status}
            self._named = []
            for name in NAMED_SHOWN:
                tok, reason = found[name]
                self._named.append(Encoding(name, name, tok, reason or ("" if tok else "unavailable")))
            self.refresh()
            self._fill_merges_combo()
            self._chart_timer.start()

    @Slot(str)
    def _on_named_failed(self, message: str) -> None:
        self._named = [Encoding(n, n, None, message) for n in NAMED_SHOWN]
        self.refresh()

    @Slot()
    def _on_named_finished(self) -> None:
        self._named_job = None
        if any(e.reason == "loading…" for e in self._named):  # ended without an answer
            self._named = [Encoding(n, n, None, "could not be loaded") for n in NAMED_SHOWN]
            self.refresh()

    # ------------------------------------------------------------ BPEs trained here

    @Slot(object)
    def _on_bpe_trained(self, tok: Tokenizer) -> None:
        self.trained.append(tok)
        self.refresh()
        self._fill_merges_combo(select=tok)
        self._chart_timer.start()

    # ------------------------------------------------------------ merges and hand-over

    def _merge_candidates(self) -> list[tuple[str, Tokenizer]]:
        out = [(f"{tok.name} (trained here)", tok) for tok in reversed(self.trained)]
        if self.state.tokenizer is not None and not isinstance(self.state.tokenizer, CharTokenizer):
            out.append((f"model: {self.state.tokenizer.name}", self.state.tokenizer))
        for enc in self._named:
            if enc.tokenizer is not None:
                out.append((enc.name, enc.tokenizer))
        return out

    def _fill_merges_combo(self, select: Tokenizer | None = None) -> None:
        previous = self.merges_tokenizer() if select is None else select
        self._merge_items = self._merge_candidates()
        self.merges_of.blockSignals(True)
        self.merges_of.clear()
        for label, _ in self._merge_items:
            self.merges_of.addItem(label)
        index = next((i for i, (_, tok) in enumerate(self._merge_items) if tok is previous), 0)
        self.merges_of.setCurrentIndex(index)
        self.merges_of.blockSignals(False)
        self._show_merges()

    def merges_tokenizer(self) -> Tokenizer | None:
        """The tokenizer whose merges are listed."""
        i = self.merges_of.currentIndex()
        return self._merge_items[i][1] if 0 <= i < len(self._merge_items) else None

    @Slot()
    def _show_merges(self, *args: Any) -> None:
        tok = self.merges_tokenizer()
        self._update_use_button()
        if tok is None:
            self.merges.set_merges(None, "No BPE yet: train one above.")
            return
        try:
            self.merges.set_merges(merges_table(tok))
        except Exception as e:  # not a BPE, or the engine cannot list its merges
            self.merges.set_merges(None, f"No merges to list for {tok.name}: {e}")

    def selected_trained(self) -> Tokenizer | None:
        tok = self.merges_tokenizer()
        return tok if tok is not None and any(tok is t for t in self.trained) else None

    @Slot()
    def use_for_next_model(self) -> None:
        tok = self.selected_trained()
        if tok is None:
            return
        self.state.set_pending_tokenizer(tok)
        self._notify(f"The next model trained from scratch will use {tok.name}.")

    @Slot()
    def _update_use_button(self) -> None:
        tok = self.selected_trained()
        self.use_button.setEnabled(tok is not None)
        pending = self.state.pending_tokenizer
        if pending is not None:
            self.use_status.setText(f"Next model's tokenizer: {pending.name} (set in the Training tab)")
        else:
            self.use_status.setText("Select a BPE trained here to use it for the next model.")

    # ------------------------------------------------------------ bytes per token chart

    @property
    def chart_measuring(self) -> bool:
        return self._chart_job is not None

    @Slot()
    def update_chart(self) -> None:
        """Measure bytes per token of every available encoding on a sample of the corpus (in a job)."""
        if not self.isVisible():
            self._chart_stale = True  # measured when the tab is shown
            return
        self._chart_stale = False
        if self._chart_job is not None:
            self._chart_again = True
            return
        corpus = self.state.corpus
        if corpus is not None:
            text, source = sample_text(corpus.text()), f"on a sample of {corpus.name}"
        else:
            text, source = self.text.toPlainText(), "on the text above (no corpus chosen)"
        encodings = [(r.name, r.tokenizer) for r in self.encodings() if r.tokenizer is not None]
        if not text or not encodings:
            self.chart.set_values([])
            return
        self._chart_job = self.runner.start("tokenizer-chart", bytes_per_token_job(text, encodings, source))
        self._chart_job.events.connect(self._on_chart_events)
        self._chart_job.failed.connect(lambda msg: self._notify(f"Bytes-per-token chart failed: {msg}"))
        self._chart_job.finished.connect(self._on_chart_finished)

    @Slot(list)
    def _on_chart_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, BytesPerToken):
                self.chart.set_values(list(event.values), event.source)

    @Slot()
    def _on_chart_finished(self) -> None:
        self._chart_job = None
        if self._chart_again:
            self._chart_again = False
            self.update_chart()

    # ------------------------------------------------------------ reacting to the app

    @Slot()
    def _on_model_changed(self) -> None:
        self.refresh()
        self._fill_merges_combo()
        self._chart_timer.start()

    @Slot()
    def _on_corpus_changed(self) -> None:
        self._corpus_char = None
        self.bpe.fill_corpus_combo()
        self.refresh()
        self._chart_timer.start()

    @Slot()
    def _use_corpus_sample(self) -> None:
        corpus = self.state.corpus
        if corpus is None:
            self._notify("No corpus chosen yet: pick one in the Training tab.")
            return
        self.text.setPlainText(corpus.sample_passage(600))

    def _notify(self, message: str) -> None:
        if not dialogs.notify(self, message, 8000):
            self.summary.setText(message)
