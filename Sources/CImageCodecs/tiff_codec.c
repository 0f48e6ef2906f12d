// TIFF decoding through libtiff, from memory. libtiff reports problems through a process-wide
// handler; it writes them into the calling thread's buffer, from where the functions below
// return them.

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>

#include "include/image_codecs.h"

static _Thread_local char tiff_message[256];

static void tiff_error(const char *module, const char *format, va_list args) {
  (void)module;
  vsnprintf(tiff_message, sizeof tiff_message, format, args);
}

// Warnings (unknown tags and the like) are not errors; they are dropped.
static void tiff_warning(const char *module, const char *format, va_list args) {
  (void)module;
  (void)format;
  (void)args;
}

typedef struct {
  const uint8_t *data;
  toff_t size;
  toff_t position;
} memory_file;

static tsize_t memory_read(thandle_t handle, tdata_t buffer, tsize_t count) {
  memory_file *f = (memory_file *)handle;
  if (f->position >= f->size) return 0;
  toff_t left = f->size - f->position;
  tsize_t n = (toff_t)count < left ? count : (tsize_t)left;
  memcpy(buffer, f->data + f->position, (size_t)n);
  f->position += (toff_t)n;
  return n;
}

static tsize_t memory_write(thandle_t handle, tdata_t buffer, tsize_t count) {
  (void)handle;
  (void)buffer;
  (void)count;
  return -1;
}

static toff_t memory_seek(thandle_t handle, toff_t offset, int whence) {
  memory_file *f = (memory_file *)handle;
  toff_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? f->position : f->size;
  f->position = base + offset;
  return f->position;
}

static int memory_close(thandle_t handle) {
  (void)handle;
  return 0;
}

static toff_t memory_size(thandle_t handle) { return ((memory_file *)handle)->size; }

static int memory_map(thandle_t handle, tdata_t *base, toff_t *size) {
  memory_file *f = (memory_file *)handle;
  *base = (tdata_t)f->data;
  *size = f->size;
  return 1;
}

static void memory_unmap(thandle_t handle, tdata_t base, toff_t size) {
  (void)handle;
  (void)base;
  (void)size;
}

static TIFF *open_memory(memory_file *file, char *error, size_t capacity) {
  TIFFSetErrorHandler(tiff_error);
  TIFFSetWarningHandler(tiff_warning);
  tiff_message[0] = '\0';
  TIFF *tif = TIFFClientOpen("image data", "rm", (thandle_t)file, memory_read, memory_write,
                             memory_seek, memory_close, memory_size, memory_map, memory_unmap);
  if (!tif) snprintf(error, capacity, "corrupt TIFF: %s", tiff_message);
  return tif;
}

int evsam_tiff_dimensions(const uint8_t *data, size_t size, uint32_t *width, uint32_t *height,
                          char *error, size_t error_capacity) {
  memory_file file = {data, (toff_t)size, 0};
  TIFF *tif = open_memory(&file, error, error_capacity);
  if (!tif) return EVSAM_CORRUPT;
  int ok = TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, width) &&
           TIFFGetField(tif, TIFFTAG_IMAGELENGTH, height);
  TIFFClose(tif);
  if (!ok) {
    snprintf(error, error_capacity, "corrupt TIFF: no image width or height");
    return EVSAM_CORRUPT;
  }
  return EVSAM_OK;
}

// 16-bit gray or RGB, contiguous, one scanline at a time: the smallest and largest sample of
// the whole image map linearly onto 0…255.
static int decode_16bit(TIFF *tif, uint32_t w, uint32_t h, uint16_t channels, uint16_t photometric,
                        uint8_t *rgb, char *error, size_t capacity) {
  tsize_t line_size = TIFFScanlineSize(tif);
  if (line_size < (tsize_t)w * channels * 2) {
    snprintf(error, capacity, "corrupt TIFF: scanlines of %ld bytes", (long)line_size);
    return EVSAM_CORRUPT;
  }
  uint16_t *samples = malloc((size_t)w * h * channels * sizeof(uint16_t));
  uint16_t *line = malloc((size_t)line_size);
  if (!samples || !line) {
    free(samples);
    free(line);
    snprintf(error, capacity, "out of memory");
    return EVSAM_OUT_OF_MEMORY;
  }
  uint16_t lo = 65535, hi = 0;
  for (uint32_t y = 0; y < h; y++) {
    if (TIFFReadScanline(tif, line, y, 0) < 0) {
      free(samples);
      free(line);
      snprintf(error, capacity, "corrupt or truncated TIFF at row %u: %s", y, tiff_message);
      return EVSAM_CORRUPT;
    }
    uint16_t *row = samples + (size_t)y * w * channels;
    for (size_t i = 0; i < (size_t)w * channels; i++) {
      uint16_t v = line[i];
      if (photometric == PHOTOMETRIC_MINISWHITE) v = (uint16_t)(65535 - v);
      row[i] = v;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  free(line);
  const double scale = hi > lo ? 255.0 / (double)(hi - lo) : 0.0;
  for (size_t p = 0; p < (size_t)w * h; p++) {
    for (int c = 0; c < 3; c++) {
      uint16_t v = samples[p * channels + (channels == 1 ? 0 : c)];
      rgb[p * 3 + c] = (uint8_t)((double)(v - lo) * scale + 0.5);
    }
  }
  free(samples);
  return EVSAM_OK;
}

int evsam_tiff_decode_rgb8(const uint8_t *data, size_t size, size_t max_pixels, uint8_t **pixels,
                           uint32_t *width, uint32_t *height, char *error, size_t error_capacity) {
  memory_file file = {data, (toff_t)size, 0};
  TIFF *tif = open_memory(&file, error, error_capacity);
  if (!tif) return EVSAM_CORRUPT;
  uint32_t w = 0, h = 0;
  uint16_t bits = 1, channels = 1, format = SAMPLEFORMAT_UINT, planar = PLANARCONFIG_CONTIG;
  uint16_t photometric = PHOTOMETRIC_MINISBLACK;
  if (!TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w) || !TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h) ||
      w == 0 || h == 0) {
    TIFFClose(tif);
    snprintf(error, error_capacity, "corrupt TIFF: image size %ux%u", w, h);
    return EVSAM_CORRUPT;
  }
  if ((size_t)w * h > max_pixels) {
    TIFFClose(tif);
    snprintf(error, error_capacity, "image of %ux%u pixels exceeds the limit of %zu pixels", w, h,
             max_pixels);
    return EVSAM_TOO_LARGE;
  }
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bits);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &channels);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &format);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
  TIFFGetField(tif, TIFFTAG_PHOTOMETRIC, &photometric);
  uint8_t *rgb = malloc((size_t)w * h * 3);
  if (!rgb) {
    TIFFClose(tif);
    snprintf(error, error_capacity, "out of memory");
    return EVSAM_OUT_OF_MEMORY;
  }
  int status = EVSAM_OK;
  if (bits == 16 && format == SAMPLEFORMAT_UINT && planar == PLANARCONFIG_CONTIG &&
      !TIFFIsTiled(tif) &&
      ((channels == 1 &&
        (photometric == PHOTOMETRIC_MINISBLACK || photometric == PHOTOMETRIC_MINISWHITE)) ||
       (channels >= 3 && photometric == PHOTOMETRIC_RGB))) {
    status = decode_16bit(tif, w, h, channels, photometric, rgb, error, error_capacity);
  } else if (bits <= 8 && format == SAMPLEFORMAT_UINT) {
    char reason[1024] = {0};
    if (!TIFFRGBAImageOK(tif, reason)) {
      snprintf(error, error_capacity, "unsupported TIFF: %s", reason);
      status = EVSAM_UNSUPPORTED;
    } else {
      uint32_t *raster = malloc((size_t)w * h * sizeof(uint32_t));
      if (!raster) {
        snprintf(error, error_capacity, "out of memory");
        status = EVSAM_OUT_OF_MEMORY;
      } else if (!TIFFReadRGBAImageOriented(tif, w, h, raster, ORIENTATION_TOPLEFT, 0)) {
        snprintf(error, error_capacity, "corrupt or truncated TIFF: %s", tiff_message);
        status = EVSAM_CORRUPT;
      } else {
        for (size_t p = 0; p < (size_t)w * h; p++) {
          rgb[p * 3] = (uint8_t)TIFFGetR(raster[p]);
          rgb[p * 3 + 1] = (uint8_t)TIFFGetG(raster[p]);
          rgb[p * 3 + 2] = (uint8_t)TIFFGetB(raster[p]);
        }
      }
      free(raster);
    }
  } else {
    snprintf(error, error_capacity,
             "unsupported TIFF: %u-bit %s samples (%u per pixel); convert it to 8- or 16-bit "
             "integers",
             bits, format == SAMPLEFORMAT_IEEEFP ? "floating-point" : "integer", channels);
    status = EVSAM_UNSUPPORTED;
  }
  TIFFClose(tif);
  if (status != EVSAM_OK) {
    free(rgb);
    return status;
  }
  *pixels = rgb;
  *width = w;
  *height = h;
  return EVSAM_OK;
}
