#ifndef EVSAM_IMAGE_CODECS_H
#define EVSAM_IMAGE_CODECS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Result codes of the functions below.
enum {
  EVSAM_OK = 0,
  /// The data breaks the format (message in `error`).
  EVSAM_CORRUPT = -1,
  /// The data ends before the image does.
  EVSAM_TRUNCATED = -2,
  /// More than `max_pixels` pixels.
  EVSAM_TOO_LARGE = -3,
  EVSAM_OUT_OF_MEMORY = -4,
  /// A valid file this reader does not handle.
  EVSAM_UNSUPPORTED = -5,
};

/// Decodes a PNG held in memory to 8-bit RGB with the pixel values of PIL's
/// `Image.open(...).convert("RGB")`: palette entries looked up (indices past the palette are
/// black), gray replicated, alpha and tRNS discarded without compositing, no gamma correction;
/// 16-bit RGB / RGBA / gray+alpha keep their high byte, 16-bit gray saturates at 255 (PIL
/// opens it as mode "I;16", whose conversion to RGB clips).
/// On success returns EVSAM_OK and sets *pixels (malloc'ed, width*height*3 bytes; free with
/// evsam_free), *width and *height. On failure returns a negative code and writes a message
/// into `error`. libpng reports errors by longjmp, which cannot cross Swift frames: it is
/// caught here.
int evsam_png_decode_rgb8(const uint8_t *data, size_t size, size_t max_pixels, uint8_t **pixels,
                          uint32_t *width, uint32_t *height, char *error, size_t error_capacity);

/// Encodes 8-bit gray (channels 1), RGB (3) or RGBA (4) rows as a PNG in memory.
/// On success returns EVSAM_OK and sets *png (malloc'ed; free with evsam_free) and *png_size.
int evsam_png_encode(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                     uint8_t **png, size_t *png_size, char *error, size_t error_capacity);

/// Reads a TIFF's first image's width and height from its header. Returns EVSAM_OK, or a
/// negative code with a message in `error`.
int evsam_tiff_dimensions(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height,
                          char *error, size_t error_capacity);

/// Decodes a TIFF's first image held in memory to 8-bit RGB. 8-bit (and 1-, 2-, 4-bit,
/// palette, YCbCr, CMYK, any compression libtiff reads) go through libtiff's RGBA interface,
/// alpha dropped; 16-bit gray and RGB (microscopy, aerial) are stretched linearly from the
/// image's smallest to its largest sample onto 0…255, as image viewers show them; other sample
/// formats (floating point, 32-bit) are refused. Sets *pixels (malloc'ed, width*height*3;
/// free with evsam_free), *width, *height.
int evsam_tiff_decode_rgb8(const uint8_t *data, size_t size, size_t max_pixels, uint8_t **pixels,
                           uint32_t *width, uint32_t *height, char *error, size_t error_capacity);

void evsam_free(void *pointer);

#ifdef __cplusplus
}
#endif

#endif
