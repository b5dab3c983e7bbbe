"""Checks of what a window really shows, for tests and the screenshot tool.

- `contrast_problems(root)`: every visible text, measured on grabbed pixels (QWidget.grab), not on
  palette values: the pixels of each glyph cluster against the background around it, as a WCAG
  contrast ratio. Labels, buttons, check boxes, fields, combo boxes, text views and the text items of
  pyqtgraph plots (axes, titles, labels) are covered; disabled widgets are exempt, as in WCAG.
- `squeezed_widgets(root)`: visible labels, buttons and fields smaller than their minimum size hint
  (their text is clipped), or cut off by their parent.
- `background_problems(root, dark)`: views whose background is on the wrong side after a theme switch.

Each returns a list of one-line descriptions; empty means fine. From the command line,
`python -m app.tools.ui_audit --size 1280x720 --theme dark` opens the app and checks every tab.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRect
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QStyle,
    QStyleOptionButton,
    QStyleOptionComboBox,
    QStyleOptionGroupBox,
    QTextEdit,
    QToolButton,
    QWidget,
)

from app.launcher import make_app
from app.main_window import MainWindow
from app.theme import MIN_CONTRAST

INK = 1.5  # a pixel this far (contrast ratio) from its background is part of a glyph
INK_COLOUR_DISTANCE = 120  # ... or this far in colour (|dR| + |dG| + |dB|), however close in brightness
MIN_GLYPH_PIXELS = 6  # ink smaller than this on one background (a cursor blink) is not judged
DIRECTION_COS = 0.97  # ink pixels whose offsets from the background are this parallel share a colour
LARGE_TEXT_MINIMUM = 3.0  # WCAG AA for large text (18 pt, or 14 pt bold)
SIZED_TYPES = (QLabel, QAbstractButton, QLineEdit, QComboBox, QAbstractSpinBox)

_LINEAR = np.array([c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
                    for c in (np.arange(256) / 255.0)])


# ---------------------------------------------------------------- pixels

def image_array(image: QImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a QImage."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    data = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * height).reshape(height, stride)
    return data[:, : width * 3].reshape(height, width, 3).copy()


def grab(widget: QWidget, rect: QRect | None = None) -> np.ndarray:
    """What `widget` paints (in device pixels: a 2x screen gives a 2x image)."""
    pixmap = widget.grab(rect) if rect is not None else widget.grab()
    return image_array(pixmap.toImage())


def luminance(rgb: np.ndarray) -> np.ndarray:
    lin = _LINEAR[rgb]
    return lin[..., 0] * 0.2126 + lin[..., 1] * 0.7152 + lin[..., 2] * 0.0722


def _contrast(a: np.ndarray, b: float | np.ndarray) -> np.ndarray:
    return (np.maximum(a, b) + 0.05) / (np.minimum(a, b) + 0.05)


def _mode_share(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """The most common colour, and the share of the pixels that have it."""
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    values, counts = np.unique(packed.ravel(), return_counts=True)
    i = int(np.argmax(counts))
    v = int(values[i])
    return np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], dtype=np.uint8), counts[i] / packed.size


def _mode(rgb: np.ndarray) -> np.ndarray:
    return _mode_share(rgb)[0]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _colour_contrasts(pixels: np.ndarray, background: np.ndarray) -> list[float]:
    """The contrast of each text colour among the ink pixels of one line on one background.

    Anti-aliased pixels lie between the background and the text's colour, in the same direction from the
    background: pixels are grouped by that direction, and each group's strongest pixel is its text's
    contrast (so a pale dot belongs to its line). Limitation: two colours in the same direction on one
    line (grey next to black) count as one, the stronger.
    """
    values, counts = np.unique(pixels, axis=0, return_counts=True)
    bg = background.astype(np.float64)
    offsets = values.astype(np.float64) - bg
    norms = np.linalg.norm(offsets, axis=1)
    contrasts = _contrast(luminance(values), float(luminance(background)))
    centres: list[np.ndarray] = []
    best: list[float] = []
    sizes: list[int] = []
    for i in np.argsort(-norms):
        if norms[i] == 0:
            continue
        unit = offsets[i] / norms[i]
        for k, centre in enumerate(centres):
            if float(unit @ centre) >= DIRECTION_COS:
                sizes[k] += int(counts[i])
                break
        else:
            centres.append(unit)
            best.append(float(contrasts[i]))
            sizes.append(int(counts[i]))
    return [b for b, n in zip(best, sizes) if n >= MIN_GLYPH_PIXELS]


def _column_backgrounds(band: np.ndarray) -> np.ndarray:
    """(W,) packed RGB of the background under each column of a line band.

    A line's first and last rows are background: glyphs rarely reach both, while a coloured span behind
    the text fills both. A column whose two end pixels agree has that background; the others (a capital's
    top, a descender) take the nearest agreeing column's.
    """
    packed = (band[..., 0].astype(np.int64) << 16) | (band[..., 1].astype(np.int64) << 8) | band[..., 2]
    top, bottom = packed[0], packed[-1]
    known = np.flatnonzero(top == bottom)
    if len(known) == 0:
        return np.full(len(top), _packed_mode(top))
    nearest = known[np.clip(np.searchsorted(known, np.arange(len(top))), 0, len(known) - 1)]
    left = known[np.clip(np.searchsorted(known, np.arange(len(top))) - 1, 0, len(known) - 1)]
    use_left = np.abs(np.arange(len(top)) - left) < np.abs(nearest - np.arange(len(top)))
    return top[np.where(use_left, left, nearest)]


def _packed_mode(values: np.ndarray) -> int:
    uniques, counts = np.unique(values, return_counts=True)
    return int(uniques[np.argmax(counts)])


def _is_ink(rgb: np.ndarray, lum: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Pixels that differ from the background: in luminance, or in colour (a yellow on white is text too,
    an unreadable one)."""
    far = np.abs(rgb.astype(np.int32) - background.astype(np.int32)).sum(axis=-1) >= INK_COLOUR_DISTANCE
    return (_contrast(lum, float(luminance(background))) >= INK) | far


def text_contrasts(rgb: np.ndarray) -> list[float]:
    """The contrast ratio of each text colour in an image of text, against the background it is on.

    Lines are the row bands that hold ink. Within a line, each column has its own background (see
    _column_backgrounds), so text on coloured token spans is judged against its span, and the spans
    themselves are background, not ink. The ink on each background is
    then split into the colours the text was drawn in (see _colour_contrasts): anti-aliased edges are
    paler than the text, and not judged on their own.
    """
    if rgb.size == 0:
        return []
    lum = luminance(rgb)
    ink = _is_ink(rgb, lum, _mode(rgb))
    out = []
    for r0, r1 in _runs(ink.any(axis=1)):
        r0, r1 = max(0, r0 - 1), min(rgb.shape[0], r1 + 1)  # the background rows around the line, if any
        band = rgb[r0:r1]
        modes = _column_backgrounds(band)
        edges = np.flatnonzero(np.diff(modes)) + 1
        by_background: dict[tuple[int, ...], list[np.ndarray]] = {}
        for c0, c1 in zip(np.concatenate(([0], edges)), np.concatenate((edges, [len(modes)]))):
            v = int(modes[c0])
            bg = np.array([(v >> 16) & 255, (v >> 8) & 255, v & 255], dtype=np.uint8)
            block = band[:, c0:c1]
            local = _is_ink(block, lum[r0:r1, c0:c1], bg)
            if not local.any():
                continue
            # Near-equal backgrounds (a button's gradient) are one: a pale dot is judged with its line.
            key = next((k for k in by_background if max(abs(a - b) for a, b in zip(k, bg.tolist())) <= 10),
                       tuple(bg.tolist()))
            by_background.setdefault(key, []).append(block[local])
        for bg, chunks in by_background.items():
            out.extend(_colour_contrasts(np.concatenate(chunks), np.array(bg, dtype=np.uint8)))
    return out


# ---------------------------------------------------------------- widgets

def describe(widget: QWidget) -> str:
    """A short name for a widget: its class, object name and text, and the tab it is in."""
    text = ""
    for getter in ("text", "currentText", "title", "placeholderText", "toPlainText"):
        fn = getattr(widget, getter, None)
        if callable(fn):
            try:
                value = fn()
            except TypeError:
                continue
            if isinstance(value, str) and value.strip():
                text = value.strip().replace("\n", " ")
                break
    parts = [type(widget).__name__]
    if widget.objectName():
        parts.append(f"#{widget.objectName()}")
    if text:
        parts.append(repr(text[:40] + ("…" if len(text) > 40 else "")))
    owner = widget.parentWidget()
    while owner is not None and not type(owner).__name__.endswith("Tab"):
        owner = owner.parentWidget()
    if owner is not None:
        parts.append(f"in {type(owner).__name__}")
    return " ".join(parts)


def shown_widgets(root: QWidget, types: tuple[type, ...] = (QWidget,)) -> list[QWidget]:
    """Widgets of `types` under root (root included) that are on screen now: visible, not in a hidden tab,
    not scrolled away, not zero-sized."""
    widgets = [root, *root.findChildren(QWidget)]
    return [w for w in widgets if isinstance(w, types) and w.isVisible() and w.width() > 0 and w.height() > 0
            and not w.visibleRegion().isEmpty()]


def _text_rect(widget: QWidget) -> tuple[QWidget, QRect | list[QRect]] | None:
    """The widget (or child) and rectangle(s) that hold its text, without frames, indicators and arrows."""
    style = widget.style()
    if isinstance(widget, (QTextEdit, QPlainTextEdit)):
        return widget.viewport(), _text_lines(widget)
    if isinstance(widget, (QCheckBox, QRadioButton)):
        option = QStyleOptionButton()
        option.initFrom(widget)
        option.text = widget.text()
        element = (QStyle.SubElement.SE_CheckBoxContents if isinstance(widget, QCheckBox)
                   else QStyle.SubElement.SE_RadioButtonContents)
        return widget, style.subElementRect(element, option, widget)
    if isinstance(widget, QComboBox):
        if widget.isEditable():
            return None  # its line edit is checked on its own
        option = QStyleOptionComboBox()
        option.initFrom(widget)
        rect = style.subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                    QStyle.SubControl.SC_ComboBoxEditField, widget)
        return widget, rect.adjusted(1, 2, -1, -2)
    if isinstance(widget, QGroupBox):
        option = QStyleOptionGroupBox()
        widget.initStyleOption(option)
        rect = style.subControlRect(QStyle.ComplexControl.CC_GroupBox, option,
                                    QStyle.SubControl.SC_GroupBoxLabel, widget)
        return widget, rect
    if isinstance(widget, QPushButton):
        option = QStyleOptionButton()
        widget.initStyleOption(option)
        rect = style.subElementRect(QStyle.SubElement.SE_PushButtonContents, option, widget)
        return widget, rect.adjusted(2, 2, -2, -2)  # clear of the bevel (a default button's is drawn inside)
    if isinstance(widget, QToolButton):
        menu = widget.popupMode() != QToolButton.ToolButtonPopupMode.DelayedPopup or widget.menu() is not None
        return widget, widget.rect().adjusted(2, 2, -(12 if menu else 2), -2)  # not the frame or menu arrow
    if isinstance(widget, QLineEdit):
        return widget, widget.rect().adjusted(2, 2, -2, -2) if widget.hasFrame() else widget.rect()
    if isinstance(widget, QLabel):
        if widget.pixmap() is not None and not widget.pixmap().isNull():
            return None
        return widget, widget.contentsRect()
    return None


def _text_lines(edit: QTextEdit | QPlainTextEdit) -> list[QRect]:
    """The rectangle of each laid-out line shown in a text view's viewport (lines of coloured spans touch,
    so they cannot be told apart from the pixels alone)."""
    viewport = edit.viewport().rect()
    document = edit.document()
    if isinstance(edit, QPlainTextEdit):
        offset = edit.contentOffset()
    else:
        offset = QPointF(-edit.horizontalScrollBar().value(), -edit.verticalScrollBar().value())
    rects = []
    block = document.begin()
    while block.isValid():
        if isinstance(edit, QPlainTextEdit):
            top_left = edit.blockBoundingGeometry(block).translated(offset).topLeft()
        else:
            top_left = document.documentLayout().blockBoundingRect(block).translated(offset).topLeft()
        if top_left.y() > viewport.bottom():
            break
        layout = block.layout()
        for i in range(layout.lineCount() if layout is not None else 0):
            line = layout.lineAt(i).rect().translated(top_left).toAlignedRect()
            shown = line.intersected(viewport)
            if shown.height() >= line.height() - 1 and shown.width() > 0:
                rects.append(shown)
        block = block.next()
    return rects


def _minimum_for(widget: QWidget) -> float:
    font = widget.font()
    size = font.pointSizeF()
    large = size >= 18 or (font.bold() and size >= 14)
    return LARGE_TEXT_MINIMUM if large else MIN_CONTRAST


def widget_contrast(widget: QWidget) -> float | None:
    """The lowest contrast of a widget's text colours as painted, or None where it shows no text."""
    found = _text_rect(widget)
    if found is None:
        return None
    target, rects = found
    values = []
    for rect in rects if isinstance(rects, list) else [rects]:
        if rect.width() > 0 and rect.height() > 0:
            values += text_contrasts(grab(target, rect))
    return min(values) if values else None


def _plot_text_items(view: pg.GraphicsView) -> list[tuple[str, QRect]]:
    """(name, rectangle in the view) of every text a pyqtgraph view draws: axes, titles, labels."""
    out = []
    for item in view.scene().items():
        if not item.isVisible() or item.opacity() < 0.99:
            continue
        if isinstance(item, pg.AxisItem):
            if not item.style.get("showValues", True) and not item.labelText:
                continue
            name = f"axis {item.orientation} {item.labelText!r}"
        elif isinstance(item, (pg.LabelItem, pg.TextItem)):
            text = item.text if isinstance(item, pg.LabelItem) else item.textItem.toPlainText()
            if not str(text).strip():
                continue
            name = f"{type(item).__name__} {str(text)[:30]!r}"
        else:
            continue
        rect = view.mapFromScene(item.sceneBoundingRect()).boundingRect().intersected(view.rect())
        if rect.width() > 2 and rect.height() > 2:
            out.append((name, rect))
    return out


def contrast_problems(root: QWidget, minimum: float | None = None) -> list[str]:
    """Texts under `root` whose glyphs, as painted, reach less than the WCAG AA contrast (4.5:1, large
    text 3:1) against their background."""
    problems = []
    for widget in shown_widgets(root):
        if not widget.isEnabled():
            continue  # WCAG: text of an inactive control has no contrast requirement
        if isinstance(widget, pg.GraphicsView):
            image = grab(widget)
            scale = image.shape[1] / max(1, widget.width())
            for name, rect in _plot_text_items(widget):
                crop = image[int(rect.top() * scale):int(rect.bottom() * scale),
                             int(rect.left() * scale):int(rect.right() * scale)]
                values = text_contrasts(crop)
                need = minimum or MIN_CONTRAST
                if values and min(values) < need:
                    problems.append(f"{describe(widget)}: {name} contrast {min(values):.2f} < {need}")
            continue
        value = widget_contrast(widget)
        need = minimum or _minimum_for(widget)
        if value is not None and value < need:
            problems.append(f"{describe(widget)}: contrast {value:.2f} < {need}")
    return problems


def squeezed_widgets(root: QWidget) -> list[str]:
    """Visible labels, buttons and fields narrower or shorter than their minimum size hint, or cut off by
    a parent (outside scroll areas, where being partly out of view is the point)."""
    problems = []
    for widget in shown_widgets(root, SIZED_TYPES):
        if isinstance(widget, QLineEdit) and isinstance(widget.parentWidget(), (QAbstractSpinBox, QComboBox)):
            continue  # part of a spin box or combo box, judged as a whole
        hint = widget.minimumSizeHint()
        width, height = widget.width(), widget.height()
        need_w, need_h = hint.width(), hint.height()
        if isinstance(widget, QLabel) and widget.wordWrap() and widget.hasHeightForWidth():
            need_h = max(need_h if not widget.text() else 0, widget.heightForWidth(width))
        if (need_w > 0 and width < need_w) or (need_h > 0 and height < need_h):
            problems.append(f"{describe(widget)}: {width}x{height} < minimum {need_w}x{need_h}")
            continue
        if not _inside_scroll_area(widget):
            shown = widget.visibleRegion().boundingRect()
            if shown.width() < width - 1 or shown.height() < height - 1:
                problems.append(f"{describe(widget)}: only {shown.width()}x{shown.height()} of {width}x{height} "
                                "shown (cut off by its parent)")
    return problems


def _inside_scroll_area(widget: QWidget) -> bool:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return True
        parent = parent.parentWidget()
    return False


def background_problems(root: QWidget, dark: bool) -> list[str]:
    """Text views and plots whose painted background does not match the theme (light or dark)."""
    problems = []
    for widget in shown_widgets(root, (QTextEdit, QPlainTextEdit, pg.GraphicsView, QLabel)):
        target = widget.viewport() if isinstance(widget, (QTextEdit, QPlainTextEdit)) else widget
        image = grab(target)
        if image.size == 0:
            continue
        lum = float(luminance(_mode(image)))
        if (dark and lum > 0.25) or (not dark and lum < 0.35):
            problems.append(f"{describe(widget)}: background luminance {lum:.2f} in the "
                            f"{'dark' if dark else 'light'} theme")
    return problems


# ---------------------------------------------------------------- command line

def audit_window(window: QWidget, app, theme_name: str | None = None, tabs: list[str] | None = None,
                 settle_s: float = 0.6) -> dict[str, list[str]]:
    """Show each tab of a MainWindow in turn (after its jobs settle) and collect every problem found."""
    tab_widget = window.tabs
    titles = [tab_widget.tabText(i) for i in range(tab_widget.count())]
    found: dict[str, list[str]] = {}
    for i, title in enumerate(titles):
        if tabs and title not in tabs:
            continue
        tab_widget.setCurrentIndex(i)
        _settle(app, window, settle_s)
        page = tab_widget.widget(i)
        problems = squeezed_widgets(page) + contrast_problems(page)
        if theme_name in ("light", "dark"):
            problems += background_problems(page, theme_name == "dark")
        found[title] = problems
    return found


def _settle(app, window, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or (window.runner.running() and time.monotonic() < deadline + 60):
        app.processEvents()
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.tools.ui_audit",
                                     description="Check every tab for squeezed widgets and unreadable text.")
    parser.add_argument("--size", default="1280x720", help="window size WIDTHxHEIGHT (logical pixels)")
    parser.add_argument("--theme", default="light", choices=["system", "light", "dark"])
    parser.add_argument("--tab", action="append", help="only this tab (repeatable)")
    args = parser.parse_args(argv)
    os.environ.setdefault("LLM_PLAYGROUND_SETTINGS", str(Path(tempfile.mkdtemp()) / "settings.ini"))
    app = make_app([sys.argv[0]], theme_name=args.theme)
    window = MainWindow()
    width, height = (int(x) for x in args.size.lower().split("x"))
    window.resize(width, height)
    window.show()
    deadline = time.monotonic() + 120
    while window.state.model is None and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    found = audit_window(window, app, args.theme, args.tab)
    print(f"window {window.width()}x{window.height()}, scale {window.devicePixelRatioF():g}, theme {args.theme}")
    for title, problems in found.items():
        print(f"{title}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for p in problems:
            print(f"  {p}")
    window._closing = True
    window.close()
    window.runner.stop_all(10000)
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
