/* wire.c - generic field codec and frame handling for the agent protocol. */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	max_align_t data[];
};

static void *xmalloc(size_t n)
{
	void *p = malloc(n);
	if (p == NULL) {
		/* PID 1 cannot recover from memory exhaustion; the host watchdog sees the VM die. */
		fprintf(stderr, "hcr-agent: out of memory\n");
		abort();
	}
	return p;
}

void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
	struct arena_block *b = a->head;
	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > 16384 ? n : 16384;
		b = xmalloc(sizeof(*b) + cap);
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
	}
	void *p = (char *)b->data + b->used;
	b->used += n;
	memset(p, 0, n);
	return p;
}

void arena_free(struct arena *a)
{
	while (a->head != NULL) {
		struct arena_block *next = a->head->next;
		free(a->head);
		a->head = next;
	}
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->cap - b->len < n) {
		size_t cap = b->cap == 0 ? 4096 : b->cap;
		while (cap - b->len < n)
			cap *= 2;
		uint8_t *d = realloc(b->data, cap);
		if (d == NULL) {
			fprintf(stderr, "hcr-agent: out of memory\n");
			abort();
		}
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

void buf_reset(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static size_t scalar_size(uint8_t type)
{
	switch (type) {
	case HCR_FT_U32:
	case HCR_FT_I32:
		return 4;
	case HCR_FT_U64:
		return 8;
	case HCR_FT_BOOL:
		return 1;
	default:
		return 0;
	}
}

/* Stores one decoded value of field f at `slot`. */
static int decode_value(const struct hcr_field *f, const uint8_t *p, size_t n, void *slot, struct arena *a,
			const char **err)
{
	size_t want = scalar_size(f->type);
	if (want != 0 && n != want) {
		*err = "integer field of the wrong size";
		return -1;
	}
	switch (f->type) {
	case HCR_FT_U32:
	case HCR_FT_I32: {
		uint32_t v = get32(p);
		memcpy(slot, &v, 4);
		return 0;
	}
	case HCR_FT_U64: {
		uint64_t v = get64(p);
		memcpy(slot, &v, 8);
		return 0;
	}
	case HCR_FT_BOOL:
		*(bool *)slot = p[0] != 0;
		return 0;
	case HCR_FT_STRING: {
		if (memchr(p, 0, n) != NULL) {
			*err = "string field contains a NUL byte";
			return -1;
		}
		char *s = arena_alloc(a, n + 1);
		memcpy(s, p, n);
		s[n] = 0;
		*(char **)slot = s;
		return 0;
	}
	case HCR_FT_STRUCT:
		return hcr_decode(f->sub, p, n, slot, a, err);
	default:
		*err = "unsupported field type";
		return -1;
	}
}

/* Empty strings instead of NULL pointers, so handlers never check for NULL. */
static void fill_defaults(const struct hcr_desc *d, void *out, struct arena *a)
{
	for (size_t i = 0; i < d->nfields; i++) {
		const struct hcr_field *f = &d->fields[i];
		char *base = (char *)out + f->offset;
		if (f->repeated)
			continue;
		if (f->type == HCR_FT_STRING && *(char **)base == NULL)
			*(char **)base = arena_alloc(a, 1);
		else if (f->type == HCR_FT_STRUCT)
			fill_defaults(f->sub, base, a);
	}
}

int hcr_decode(const struct hcr_desc *d, const uint8_t *payload, size_t len, void *out, struct arena *a,
	       const char **err)
{
	size_t counts[32] = {0};
	if (d->nfields > 32) {
		*err = "descriptor has too many fields";
		return -1;
	}
	/* Pass 1: validate the layout and count repeated fields. */
	for (size_t pos = 0; pos < len;) {
		if (len - pos < 6) {
			*err = "truncated field header";
			return -1;
		}
		uint16_t tag = get16(payload + pos);
		uint32_t n = get32(payload + pos + 2);
		pos += 6;
		if (n > len - pos) {
			*err = "field overruns the payload";
			return -1;
		}
		pos += n;
		for (size_t i = 0; i < d->nfields; i++)
			if (d->fields[i].tag == tag)
				counts[i]++;
	}
	for (size_t i = 0; i < d->nfields; i++) {
		const struct hcr_field *f = &d->fields[i];
		if (f->repeated && counts[i] > 0) {
			*(void **)((char *)out + f->offset) = arena_alloc(a, counts[i] * f->elem_size);
		}
	}
	size_t filled[32] = {0};
	/* Pass 2: decode values. */
	for (size_t pos = 0; pos < len;) {
		uint16_t tag = get16(payload + pos);
		uint32_t n = get32(payload + pos + 2);
		const uint8_t *value = payload + pos + 6;
		pos += 6 + n;
		for (size_t i = 0; i < d->nfields; i++) {
			const struct hcr_field *f = &d->fields[i];
			if (f->tag != tag)
				continue;
			char *base = (char *)out + f->offset;
			if (f->type == HCR_FT_BYTES) {
				*(const uint8_t **)base = value;
				*(size_t *)((char *)out + f->count_offset) = n;
			} else if (f->repeated) {
				char *slot = *(char **)base + filled[i] * f->elem_size;
				if (decode_value(f, value, n, slot, a, err) != 0)
					return -1;
				filled[i]++;
				*(size_t *)((char *)out + f->count_offset) = filled[i];
			} else if (decode_value(f, value, n, base, a, err) != 0) {
				return -1;
			}
		}
	}
	fill_defaults(d, out, a);
	return 0;
}

static void put_field(struct buf *out, uint16_t tag, const void *p, size_t n)
{
	uint8_t head[6];
	put16(head, tag);
	put32(head + 2, (uint32_t)n);
	buf_append(out, head, 6);
	buf_append(out, p, n);
}

static void encode_value(const struct hcr_field *f, const void *slot, struct buf *out)
{
	uint8_t tmp[8];
	switch (f->type) {
	case HCR_FT_U32:
	case HCR_FT_I32: {
		uint32_t v;
		memcpy(&v, slot, 4);
		put32(tmp, v);
		put_field(out, f->tag, tmp, 4);
		break;
	}
	case HCR_FT_U64: {
		uint64_t v;
		memcpy(&v, slot, 8);
		put64(tmp, v);
		put_field(out, f->tag, tmp, 8);
		break;
	}
	case HCR_FT_BOOL:
		tmp[0] = *(const bool *)slot ? 1 : 0;
		put_field(out, f->tag, tmp, 1);
		break;
	case HCR_FT_STRING: {
		const char *s = *(char *const *)slot;
		if (s == NULL)
			s = "";
		put_field(out, f->tag, s, strlen(s));
		break;
	}
	case HCR_FT_STRUCT: {
		/* Reserve the header, encode in place, then patch the length. */
		size_t at = out->len;
		uint8_t head[6] = {0};
		buf_append(out, head, 6);
		hcr_encode(f->sub, slot, out);
		put16(out->data + at, f->tag);
		put32(out->data + at + 2, (uint32_t)(out->len - at - 6));
		break;
	}
	default:
		break;
	}
}

static bool is_default(const struct hcr_field *f, const void *slot)
{
	switch (f->type) {
	case HCR_FT_U32:
	case HCR_FT_I32:
		return *(const uint32_t *)slot == 0;
	case HCR_FT_U64:
		return *(const uint64_t *)slot == 0;
	case HCR_FT_BOOL:
		return !*(const bool *)slot;
	case HCR_FT_STRING: {
		const char *s = *(char *const *)slot;
		return s == NULL || s[0] == 0;
	}
	default:
		return false;
	}
}

void hcr_encode(const struct hcr_desc *d, const void *in, struct buf *out)
{
	for (size_t i = 0; i < d->nfields; i++) {
		const struct hcr_field *f = &d->fields[i];
		const char *base = (const char *)in + f->offset;
		if (f->type == HCR_FT_BYTES) {
			const uint8_t *p = *(uint8_t *const *)base;
			size_t n = *(const size_t *)((const char *)in + f->count_offset);
			if (n > 0)
				put_field(out, f->tag, p, n);
		} else if (f->repeated) {
			const char *items = *(char *const *)base;
			size_t n = *(const size_t *)((const char *)in + f->count_offset);
			for (size_t k = 0; k < n; k++)
				encode_value(f, items + k * f->elem_size, out);
		} else if (!is_default(f, base)) {
			encode_value(f, base, out);
		}
	}
}

void hcr_frame(struct buf *out, uint16_t type, uint32_t id, const struct hcr_desc *d, const void *body)
{
	size_t at = out->len;
	uint8_t head[HCR_FRAME_HEADER_SIZE] = {0};
	buf_append(out, head, sizeof(head));
	hcr_encode(d, body, out);
	uint8_t *h = out->data + at;
	size_t n = out->len - at - HCR_FRAME_HEADER_SIZE;
	put32(h, HCR_FRAME_MAGIC);
	put32(h + 4, (uint32_t)n);
	put16(h + 8, type);
	put16(h + 10, 0);
	put32(h + 12, id);
	uint32_t crc = hcr_crc32(0, h + 8, 8);
	crc = hcr_crc32(crc, h + HCR_FRAME_HEADER_SIZE, n);
	put32(h + 16, crc);
}

uint32_t hcr_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
	static uint32_t table[256];
	static bool ready;
	if (!ready) {
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;
			for (int k = 0; k < 8; k++)
				c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
			table[i] = c;
		}
		ready = true;
	}
	crc = ~crc;
	for (size_t i = 0; i < n; i++)
		crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

int frame_next(struct frame_reader *r, uint16_t *type, uint32_t *id, const uint8_t **payload, size_t *len)
{
	/* Drop the frame returned by the previous call. */
	buf_consume(&r->in, r->consumed);
	r->consumed = 0;
	for (;;) {
		size_t pos = 0;
		while (pos + 4 <= r->in.len && get32(r->in.data + pos) != HCR_FRAME_MAGIC)
			pos++;
		if (pos + 4 > r->in.len)
			pos = r->in.len > 3 ? r->in.len - 3 : 0;
		if (pos > 0) {
			r->skipped += pos;
			buf_consume(&r->in, pos);
		}
		if (r->in.len < HCR_FRAME_HEADER_SIZE)
			return 0;
		const uint8_t *h = r->in.data;
		uint32_t n = get32(h + 4);
		if (n > HCR_FRAME_MAX_PAYLOAD || get16(h + 10) != 0 || hcr_message_desc(get16(h + 8)) == NULL) {
			r->skipped++;
			buf_consume(&r->in, 1);
			continue;
		}
		if (r->in.len < HCR_FRAME_HEADER_SIZE + (size_t)n)
			return 0;
		uint32_t crc = hcr_crc32(0, h + 8, 8);
		crc = hcr_crc32(crc, h + HCR_FRAME_HEADER_SIZE, n);
		if (crc != get32(h + 16)) {
			r->skipped++;
			buf_consume(&r->in, 1);
			continue;
		}
		*type = get16(h + 8);
		*id = get32(h + 12);
		*payload = h + HCR_FRAME_HEADER_SIZE;
		*len = n;
		r->consumed = HCR_FRAME_HEADER_SIZE + n;
		return 1;
	}
}
