/*
 * wire.h - frames and field codec of the agent protocol (protocol/agent.json).
 *
 * The generated wire.gen.{h,c} describe every message as a table of fields
 * (tag, type, offset into the C struct); the generic codec here walks those
 * tables, so no per-message parsing code is written by hand.
 */
#ifndef HCR_WIRE_H
#define HCR_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.gen.h"

enum hcr_field_type {
	HCR_FT_U32,
	HCR_FT_I32,
	HCR_FT_U64,
	HCR_FT_BOOL,
	HCR_FT_STRING,
	HCR_FT_BYTES,
	HCR_FT_STRUCT,
};

struct hcr_field {
	uint16_t tag;
	uint8_t type;
	uint8_t repeated;
	size_t offset;       /* of the value, or of the array pointer when repeated */
	size_t count_offset; /* of the element count (repeated) or byte length (bytes) */
	const struct hcr_desc *sub;
	size_t elem_size;
	const char *name;
};

struct hcr_desc {
	const char *name;
	size_t size;
	size_t nfields;
	const struct hcr_field *fields;
};

/* A bump allocator: everything decoded from one frame is freed at once. */
struct arena {
	struct arena_block *head;
};
void *arena_alloc(struct arena *a, size_t n);
void arena_free(struct arena *a);

/* A growable byte buffer. */
struct buf {
	uint8_t *data;
	size_t len, cap;
};
void buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);

/*
 * Decodes `payload` into `out` (a zeroed struct of d->size bytes). Strings are
 * copied into the arena NUL-terminated (a string holding NUL is refused);
 * bytes point into `payload`. Returns 0, or -1 with *err naming the problem.
 */
int hcr_decode(const struct hcr_desc *d, const uint8_t *payload, size_t len, void *out, struct arena *a,
	       const char **err);

/* Appends the fields of `in` to `out`. */
void hcr_encode(const struct hcr_desc *d, const void *in, struct buf *out);

/* Appends a whole frame (header and encoded body) to `out`. */
void hcr_frame(struct buf *out, uint16_t type, uint32_t id, const struct hcr_desc *d, const void *body);

uint32_t hcr_crc32(uint32_t crc, const uint8_t *p, size_t n);

/* Incremental frame reader with resynchronisation after torn frames. */
struct frame_reader {
	struct buf in;
	size_t skipped;
	size_t consumed; /* bytes of the frame returned last, dropped on the next call */
};
/*
 * Returns 1 and fills type/id/payload/len for the next complete frame (valid
 * until the next call), 0 when more bytes are needed.
 */
int frame_next(struct frame_reader *r, uint16_t *type, uint32_t *id, const uint8_t **payload, size_t *len);

#endif
