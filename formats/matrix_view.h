// A logical matrix inside a source tensor, as the layout rules address
// experts: element (r, c) of the [rows, cols] matrix is at
// offset + r * stride + c, or at offset + c * stride + r when transposed (the
// matrix is the transpose of a [cols, rows] block of its source).
#ifndef WEIGHTCAST_FORMATS_MATRIX_VIEW_H_
#define WEIGHTCAST_FORMATS_MATRIX_VIEW_H_

#include <cstdint>

#include "common/output_tensor.h"

namespace weightcast {

struct MatrixView {
  uint32_t source = 0;
  uint64_t offset = 0;
  uint64_t rows = 0, cols = 0, stride = 0;
  bool transpose = false;

  // Rows [first, first + n) / columns [first, first + n) of this matrix.
  [[nodiscard]] MatrixView Rows(uint64_t first, uint64_t n) const {
    MatrixView m = *this;
    m.offset += transpose ? first : first * stride;
    m.rows = n;
    return m;
  }
  [[nodiscard]] MatrixView Cols(uint64_t first, uint64_t n) const {
    MatrixView m = *this;
    m.offset += transpose ? first * stride : first;
    m.cols = n;
    return m;
  }
  // The piece that copies this matrix out whole.
  [[nodiscard]] Piece AsPiece() const {
    return Piece{.source = source, .src_offset = offset, .rows = transpose ? cols : rows,
                 .cols = transpose ? rows : cols, .src_row_stride = stride,
                 .transpose = transpose};
  }
};

}  // namespace weightcast

#endif  // WEIGHTCAST_FORMATS_MATRIX_VIEW_H_
