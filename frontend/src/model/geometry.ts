// Plain geometry shared by pure layout maths (model/) and drawing (draw/painter.ts re-exports it).

/** A box in CSS pixels: top-left corner, width and height. */
export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}
