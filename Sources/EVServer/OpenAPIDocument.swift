/// The API's OpenAPI 3.1 description, served at `/openapi.json`. Tests check that every route
/// the router serves is described here and that the schemas name the fields the service reads.
public enum OpenAPIDocument {
  public static let json = #"""
    {
      "openapi": "3.1.0",
      "info": {
        "title": "evsam segmentation service",
        "version": "1.0.0",
        "description": "EfficientViT-SAM over HTTP: upload an image once (its embedding is cached), then send point, box and mask prompts and get masks back as COCO RLE or PNG. Coordinates are original-image pixels, x to the right and y down. Every error is a JSON object {\"error\": {\"status\", \"code\", \"message\"}}; a method a path does not serve is answered 405 with Allow."
      },
      "paths": {
        "/v1/health": {
          "get": {
            "summary": "Liveness, cache and queue state, resident memory",
            "operationId": "health",
            "responses": {
              "200": {"description": "The service is up", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}
            }
          }
        },
        "/v1/models": {
          "get": {
            "summary": "The loaded model",
            "operationId": "models",
            "responses": {
              "200": {"description": "Loaded models", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Models"}}}}
            }
          }
        },
        "/v1/images": {
          "post": {
            "summary": "Upload an image; it is encoded and its embedding cached",
            "description": "The body is the PNG, JPEG, TIFF or WebP file itself (the format is read from its first bytes, so image/png, image/jpeg, application/octet-stream or any other Content-Type will do), or multipart/form-data with the file in a part named image (or file). JPEGs are turned upright by their EXIF orientation. The least recently used images leave the cache when its bound is reached; their ids then answer 404 and the image must be uploaded again.",
            "operationId": "uploadImage",
            "requestBody": {
              "required": true,
              "content": {
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}},
                "application/octet-stream": {"schema": {"type": "string"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "contentMediaType": "application/octet-stream"}}, "required": ["image"]}}
              }
            },
            "responses": {
              "201": {
                "description": "Encoded and cached",
                "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/images/{id}"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Image"}}},
                "links": {
                  "GetImage": {"operationId": "getImage", "parameters": {"id": "$response.body#/id"}},
                  "DeleteImage": {"operationId": "deleteImage", "parameters": {"id": "$response.body#/id"}},
                  "Segment": {"operationId": "segment", "parameters": {"id": "$response.body#/id"}},
                  "Everything": {"operationId": "everything", "parameters": {"id": "$response.body#/id"}}
                }
              },
              "400": {"$ref": "#/components/responses/BadRequest"},
              "408": {"$ref": "#/components/responses/RequestTimeout"},
              "413": {"$ref": "#/components/responses/TooLarge"},
              "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
              "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v1/embeddings": {
          "post": {
            "summary": "Upload an image's saved embedding instead of the image; it is cached as an image",
            "description": "The body is the safetensors file `evsam embed IMAGE -o FILE` wrote (raw, or multipart/form-data with the file in a part named image or file): the 1×256×64×64 image_embeddings with the image's size and its encoder's identity (a hash of its weights and its preprocessing) in the metadata. A file from another image encoder, or without that record, answers 422 embedding_mismatch. The answer and the id are those of an uploaded image: prompts cost one decode and no encode. Segment everything encodes crops of the image and answers 409 no_pixels for such an id.",
            "operationId": "uploadEmbedding",
            "requestBody": {
              "required": true,
              "content": {
                "application/octet-stream": {"schema": {"type": "string"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "contentMediaType": "application/octet-stream"}}, "required": ["image"]}}
              }
            },
            "responses": {
              "201": {
                "description": "Cached",
                "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/images/{id}"}},
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Image"}}},
                "links": {
                  "GetImage": {"operationId": "getImage", "parameters": {"id": "$response.body#/id"}},
                  "DeleteImage": {"operationId": "deleteImage", "parameters": {"id": "$response.body#/id"}},
                  "Segment": {"operationId": "segment", "parameters": {"id": "$response.body#/id"}}
                }
              },
              "400": {"$ref": "#/components/responses/BadRequest"},
              "408": {"$ref": "#/components/responses/RequestTimeout"},
              "413": {"$ref": "#/components/responses/TooLarge"},
              "422": {"$ref": "#/components/responses/Unprocessable"},
              "501": {"description": "The server was made without its encoder's identity (a library user's SegmentationService without `encoder`): upload the image (code embeddings_unsupported)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
              "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v1/images/{id}": {
          "parameters": [{"$ref": "#/components/parameters/ImageID"}],
          "get": {
            "summary": "A cached image's size and encode time",
            "operationId": "getImage",
            "responses": {
              "200": {"description": "The image is cached", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Image"}}}},
              "404": {"$ref": "#/components/responses/NotFound"}
            }
          },
          "delete": {
            "summary": "Drop an image from the cache",
            "operationId": "deleteImage",
            "responses": {
              "204": {"description": "Dropped"},
              "404": {"$ref": "#/components/responses/NotFound"}
            }
          }
        },
        "/v1/images/{id}/segment": {
          "parameters": [
            {"$ref": "#/components/parameters/ImageID"},
            {"name": "format", "in": "query", "required": false, "description": "json (default): every mask as COCO RLE; png: one mask as an 8-bit PNG (255 inside), chosen by prompt and candidate", "schema": {"type": "string", "enum": ["json", "png"], "default": "json"}},
            {"name": "prompt", "in": "query", "required": false, "description": "With format=png: which prompt (box) of the batch, default 0", "schema": {"type": "integer", "minimum": 0, "default": 0}},
            {"name": "candidate", "in": "query", "required": false, "description": "With format=png: which candidate mask, default the best scored", "schema": {"type": "integer", "minimum": 0}}
          ],
          "post": {
            "summary": "Masks for point, box and mask prompts",
            "description": "Points (with one label each), one box or several boxes, and optionally the handle of an earlier mask of this image as mask_input. Several boxes form a batch with one prompt per box; the points and the mask input then go with every box. Coordinates must lie inside the image (0 to width, 0 to height).",
            "operationId": "segment",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SegmentRequest"}}}},
            "responses": {
              "200": {
                "description": "The masks",
                "headers": {
                  "X-Mask-Score": {"schema": {"type": "number"}, "description": "format=png: the mask's predicted IoU"},
                  "X-Mask-Area": {"schema": {"type": "integer"}, "description": "format=png: pixels inside the mask"},
                  "X-Mask-Handle": {"schema": {"type": "string"}, "description": "format=png: handle for mask_input"}
                },
                "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/SegmentResponse"}},
                  "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}}
                }
              },
              "400": {"$ref": "#/components/responses/BadRequest"},
              "404": {"$ref": "#/components/responses/NotFound"},
              "408": {"$ref": "#/components/responses/RequestTimeout"},
              "413": {"$ref": "#/components/responses/TooLarge"},
              "422": {"$ref": "#/components/responses/Unprocessable"},
              "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v1/images/{id}/everything": {
          "parameters": [{"$ref": "#/components/parameters/ImageID"}],
          "post": {
            "summary": "Segment everything: SAM's automatic mask generator",
            "description": "The body holds the generator's parameters under SAM's names (all optional, SAM's defaults; an empty body is allowed). The answer is the JSON document evsam everything writes, with the image id in place of the file name.",
            "operationId": "everything",
            "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EverythingRequest"}}}},
            "responses": {
              "200": {"description": "The annotations", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EverythingResponse"}}}},
              "400": {"$ref": "#/components/responses/BadRequest"},
              "404": {"$ref": "#/components/responses/NotFound"},
              "408": {"$ref": "#/components/responses/RequestTimeout"},
              "413": {"$ref": "#/components/responses/TooLarge"},
              "422": {"$ref": "#/components/responses/Unprocessable"},
              "409": {"description": "The image was uploaded as an embedding; segment everything needs its pixels (code no_pixels)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
              "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        }
      },
      "components": {
        "parameters": {
          "ImageID": {"name": "id", "in": "path", "required": true, "description": "The id an upload returned", "schema": {"type": "string"}}
        },
        "responses": {
          "BadRequest": {"description": "Malformed JSON or multipart body, an undecodable image or embedding file, or a bad query parameter (codes invalid_json, invalid_request, invalid_image, invalid_embedding)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "NotFound": {"description": "Unknown image id or mask handle (codes image_not_found, mask_not_found, not_found)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "RequestTimeout": {"description": "The body did not arrive within the request timeout (code request_timeout)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "TooLarge": {"description": "Body over the upload limit, or image over the size limits (codes payload_too_large, image_too_large)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "UnsupportedMediaType": {"description": "Not a PNG, JPEG, TIFF or WebP image (codes unsupported_media_type, unsupported_image)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "Unprocessable": {"description": "Well-formed but unusable prompts or settings: prompts outside the image, a label other than 0/1, an inverted box, too many points, more full-size mask pixels than the server makes per request, an embedding from another encoder (codes invalid_prompt, prompt_out_of_bounds, invalid_settings, embedding_mismatch)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "Unavailable": {"description": "Every worker busy and the queue full (code overloaded), or the request did not finish within the request timeout (code timeout); retry after Retry-After seconds", "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying"}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        },
        "schemas": {
          "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
              "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                  "status": {"type": "integer", "description": "The HTTP status"},
                  "code": {"type": "string", "description": "Stable machine-readable reason"},
                  "message": {"type": "string", "description": "What was wrong and what to do"}
                }
              }
            }
          },
          "Image": {
            "type": "object",
            "required": ["id", "width", "height", "encode_ms", "model", "cache_bytes"],
            "properties": {
              "id": {"type": "string"},
              "width": {"type": "integer"},
              "height": {"type": "integer"},
              "encode_ms": {"type": "number", "description": "Image encoder time"},
              "model": {"type": "string"},
              "cache_bytes": {"type": "integer", "description": "Bytes the image holds in the cache"}
            }
          },
          "SegmentRequest": {
            "type": "object",
            "additionalProperties": false,
            "not": {"required": ["box", "boxes"]},
            "properties": {
              "points": {"type": "array", "items": {"$ref": "#/components/schemas/Point"}, "description": "Clicks as [x, y]"},
              "labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}, "description": "1 foreground, 0 background; one per point"},
              "box": {"$ref": "#/components/schemas/Box"},
              "boxes": {"type": "array", "items": {"$ref": "#/components/schemas/Box"}, "minItems": 1, "description": "One prompt per box"},
              "mask_input": {"type": "string", "description": "Handle of an earlier mask of this image, to refine"},
              "multimask": {"type": "boolean", "default": true, "description": "Three candidates per prompt instead of one"}
            }
          },
          "Point": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
          "Box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "description": "[x0, y0, x1, y1]"},
          "RLE": {
            "type": "object",
            "required": ["size", "counts"],
            "description": "COCO run-length encoding as pycocotools writes it: size [height, width], counts the compressed string of column-major runs starting with background",
            "properties": {
              "size": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
              "counts": {"type": "string"}
            }
          },
          "Mask": {
            "type": "object",
            "required": ["segmentation", "score", "area", "bbox", "handle"],
            "properties": {
              "segmentation": {"$ref": "#/components/schemas/RLE"},
              "score": {"type": "number", "description": "Predicted IoU"},
              "area": {"type": "integer"},
              "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4, "description": "COCO box [x, y, width, height] in pixels, as pycocotools' toBbox computes it from the mask: x, y the first foreground column and row, width = x1 + 1 − x0 and height = y1 + 1 − y0 with x1, y1 the last ones (the pixels covered); all zero for an empty mask"},
              "handle": {"type": "string", "description": "Pass as mask_input to refine this mask"}
            }
          },
          "SegmentResponse": {
            "type": "object",
            "required": ["image_id", "width", "height", "multimask", "decode_ms", "prompts"],
            "properties": {
              "image_id": {"type": "string"},
              "width": {"type": "integer"},
              "height": {"type": "integer"},
              "multimask": {"type": "boolean"},
              "decode_ms": {"type": "number"},
              "prompts": {
                "type": "array",
                "items": {
                  "type": "object",
                  "required": ["best", "masks"],
                  "properties": {
                    "best": {"type": "integer", "description": "Index of the best scored mask"},
                    "masks": {"type": "array", "items": {"$ref": "#/components/schemas/Mask"}}
                  }
                }
              }
            }
          },
          "EverythingRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
              "points_per_side": {"type": "integer", "minimum": 1, "default": 32},
              "point_grids": {"type": "array", "items": {"type": "array", "items": {"$ref": "#/components/schemas/Point"}}, "description": "Normalised [0, 1] points, one grid per crop layer, instead of points_per_side"},
              "points_per_batch": {"type": "integer", "minimum": 1, "default": 64},
              "pred_iou_thresh": {"type": "number", "default": 0.88},
              "stability_score_thresh": {"type": "number", "default": 0.95},
              "stability_score_offset": {"type": "number", "default": 1.0},
              "box_nms_thresh": {"type": "number", "default": 0.7},
              "crop_n_layers": {"type": "integer", "minimum": 0, "default": 0},
              "crop_nms_thresh": {"type": "number", "default": 0.7},
              "crop_overlap_ratio": {"type": "number", "default": 0.3413333333333333},
              "crop_n_points_downscale_factor": {"type": "integer", "minimum": 1, "default": 1},
              "min_mask_region_area": {"type": "integer", "minimum": 0, "default": 0},
              "output_mode": {"type": "string", "enum": ["coco_rle", "uncompressed_rle"], "default": "coco_rle"}
            }
          },
          "EverythingResponse": {
            "type": "object",
            "required": ["image", "model", "size", "settings", "annotations", "timing_ms"],
            "properties": {
              "image": {"type": "string", "description": "The image id"},
              "model": {"type": "string"},
              "size": {"type": "array", "items": {"type": "integer"}, "description": "[height, width]"},
              "settings": {"type": "object", "description": "The generator's parameters under SAM's names"},
              "annotations": {
                "type": "array",
                "items": {
                  "type": "object",
                  "required": ["segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"],
                  "properties": {
                    "segmentation": {"type": "object", "description": "COCO RLE, or SAM's uncompressed RLE with output_mode uncompressed_rle"},
                    "area": {"type": "integer"},
                    "bbox": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4, "description": "SAM's record format, kept for compatibility with SamAutomaticMaskGenerator and evsam everything, not COCO's: [x, y, w, h] with w = x1 − x0 and h = y1 − y0 of the first and last foreground column and row, one less than a COCO box (/segment's bbox); add 1 to w and h for COCO (the web page's COCO download does). All zero for an empty mask"},
                    "predicted_iou": {"type": ["number", "null"]},
                    "stability_score": {"type": ["number", "null"]},
                    "point_coords": {"type": "array", "items": {"$ref": "#/components/schemas/Point"}},
                    "crop_box": {"type": "array", "items": {"type": "integer"}}
                  }
                }
              },
              "timing_ms": {"type": "object", "additionalProperties": {"type": "number"}}
            }
          },
          "Health": {
            "type": "object",
            "required": ["status", "model", "uptime_s", "cache", "queue", "rss_bytes"],
            "properties": {
              "status": {"type": "string", "enum": ["ok"]},
              "model": {"type": "string"},
              "uptime_s": {"type": "number"},
              "rss_bytes": {"type": "integer", "description": "Resident memory of the process"},
              "connections": {
                "type": "object",
                "description": "Open connections; refused: closed at once over --max-connections; header_timeouts: closed because a request head was not complete within --header-timeout",
                "required": ["open", "limit", "refused", "header_timeouts"],
                "properties": {
                  "open": {"type": "integer"},
                  "limit": {"type": "integer"},
                  "refused": {"type": "integer"},
                  "header_timeouts": {"type": "integer"}
                }
              },
              "cache": {
                "type": "object",
                "required": ["images", "bytes", "limit_bytes", "evictions"],
                "properties": {
                  "images": {"type": "integer"},
                  "bytes": {"type": "integer"},
                  "limit_bytes": {"type": "integer"},
                  "evictions": {"type": "integer"}
                }
              },
              "queue": {
                "type": "object",
                "required": ["workers", "capacity", "running", "waiting", "completed", "rejected", "timed_out"],
                "properties": {
                  "workers": {"type": "integer"},
                  "capacity": {"type": "integer"},
                  "running": {"type": "integer"},
                  "waiting": {"type": "integer"},
                  "completed": {"type": "integer"},
                  "rejected": {"type": "integer"},
                  "timed_out": {"type": "integer"}
                }
              }
            }
          },
          "Models": {
            "type": "object",
            "required": ["models"],
            "properties": {
              "models": {
                "type": "array",
                "items": {
                  "type": "object",
                  "required": ["name", "encoder_input_size", "prompt_frame_size", "embedding_shape", "low_res_mask_size"],
                  "properties": {
                    "name": {"type": "string"},
                    "encoder_input_size": {"type": "integer"},
                    "prompt_frame_size": {"type": "integer"},
                    "embedding_shape": {"type": "array", "items": {"type": "integer"}},
                    "low_res_mask_size": {"type": "integer"}
                  }
                }
              }
            }
          }
        }
      }
    }
    """#
}
