"""Label helpers shared by the tabs: a tone (muted, warning, error) that follows the theme, and colour
swatches painted as pictures (a coloured glyph in a label would be text, held to text contrast)."""
from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QGuiApplication, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

TONES = {"muted": "mutedLabel", "warning": "warningLabel", "error": "errorLabel"}


def set_tone(label: QLabel, tone: str | None) -> None:
    """Colour a label's text by the app style sheet's readable colours (None: normal text)."""
    name = TONES.get(tone or "", "")
    if label.objectName() != name:
        label.setObjectName(name)
        label.style().unpolish(label)
        label.style().polish(label)


def swatch_pixmap(colour: str, shape: str = "square", size: int = 12) -> QPixmap:
    """A small filled square, outlined square or dot, at the screen's pixel density."""
    ratio = QGuiApplication.primaryScreen().devicePixelRatio() if QGuiApplication.primaryScreen() else 1.0
    pixmap = QPixmap(round(size * ratio), round(size * ratio))
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    rect = QRectF(1.5, 1.5, size - 3, size - 3)
    if shape == "outline":
        painter.setPen(QPen(QColor(colour), 2))
        painter.drawRect(rect)
    else:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(colour))
        if shape == "dot":
            painter.drawEllipse(rect)
        else:
            painter.drawRect(rect)
    painter.end()
    return pixmap


class Swatch(QWidget):
    """A colour mark and a text: legends and column titles."""

    def __init__(self, colour: str, text: str = "", shape: str = "square", parent: QWidget | None = None):
        super().__init__(parent)
        self.mark = QLabel()
        self.text = QLabel(text)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(self.mark)
        layout.addWidget(self.text)
        self._shape = shape
        self.set_colour(colour)

    def set_colour(self, colour: str) -> None:
        self.colour = colour
        self.mark.setPixmap(swatch_pixmap(colour, self._shape))

    def setText(self, text: str) -> None:
        self.text.setText(text)
