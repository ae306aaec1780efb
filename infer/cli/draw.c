/* Boxes and labels on RGB images, with a tiny built-in bitmap font so the
 * runtime needs no font files. Glyphs are 3 x 5 pixels, drawn row by row
 * below ('#' = ink); lower-case letters use the capitals. */
#include <ctype.h>
#include <string.h>

#include "infer/cli/draw.h"

static const struct {
    char c;
    const char rows[16];
} GLYPHS[] = {
    {'A',
     ".#."
     "#.#"
     "###"
     "#.#"
     "#.#"},
    {'B',
     "##."
     "#.#"
     "##."
     "#.#"
     "##."},
    {'C',
     ".##"
     "#.."
     "#.."
     "#.."
     ".##"},
    {'D',
     "##."
     "#.#"
     "#.#"
     "#.#"
     "##."},
    {'E',
     "###"
     "#.."
     "##."
     "#.."
     "###"},
    {'F',
     "###"
     "#.."
     "##."
     "#.."
     "#.."},
    {'G',
     ".##"
     "#.."
     "#.#"
     "#.#"
     ".##"},
    {'H',
     "#.#"
     "#.#"
     "###"
     "#.#"
     "#.#"},
    {'I',
     "###"
     ".#."
     ".#."
     ".#."
     "###"},
    {'J',
     "..#"
     "..#"
     "..#"
     "#.#"
     ".#."},
    {'K',
     "#.#"
     "#.#"
     "##."
     "#.#"
     "#.#"},
    {'L',
     "#.."
     "#.."
     "#.."
     "#.."
     "###"},
    {'M',
     "#.#"
     "###"
     "###"
     "#.#"
     "#.#"},
    {'N',
     "##."
     "#.#"
     "#.#"
     "#.#"
     "#.#"},
    {'O',
     ".#."
     "#.#"
     "#.#"
     "#.#"
     ".#."},
    {'P',
     "##."
     "#.#"
     "##."
     "#.."
     "#.."},
    {'Q',
     ".#."
     "#.#"
     "#.#"
     "##."
     ".##"},
    {'R',
     "##."
     "#.#"
     "##."
     "#.#"
     "#.#"},
    {'S',
     ".##"
     "#.."
     ".#."
     "..#"
     "##."},
    {'T',
     "###"
     ".#."
     ".#."
     ".#."
     ".#."},
    {'U',
     "#.#"
     "#.#"
     "#.#"
     "#.#"
     "###"},
    {'V',
     "#.#"
     "#.#"
     "#.#"
     "#.#"
     ".#."},
    {'W',
     "#.#"
     "#.#"
     "###"
     "###"
     "#.#"},
    {'X',
     "#.#"
     "#.#"
     ".#."
     "#.#"
     "#.#"},
    {'Y',
     "#.#"
     "#.#"
     ".#."
     ".#."
     ".#."},
    {'Z',
     "###"
     "..#"
     ".#."
     "#.."
     "###"},
    {'0',
     "###"
     "#.#"
     "#.#"
     "#.#"
     "###"},
    {'1',
     ".#."
     "##."
     ".#."
     ".#."
     "###"},
    {'2',
     "##."
     "..#"
     ".#."
     "#.."
     "###"},
    {'3',
     "##."
     "..#"
     ".#."
     "..#"
     "##."},
    {'4',
     "#.#"
     "#.#"
     "###"
     "..#"
     "..#"},
    {'5',
     "###"
     "#.."
     "##."
     "..#"
     "##."},
    {'6',
     ".##"
     "#.."
     "###"
     "#.#"
     "###"},
    {'7',
     "###"
     "..#"
     ".#."
     ".#."
     ".#."},
    {'8',
     "###"
     "#.#"
     "###"
     "#.#"
     "###"},
    {'9',
     "###"
     "#.#"
     "###"
     "..#"
     "##."},
    {'.',
     "..."
     "..."
     "..."
     "..."
     ".#."},
    {',',
     "..."
     "..."
     "..."
     ".#."
     "#.."},
    {':',
     "..."
     ".#."
     "..."
     ".#."
     "..."},
    {'-',
     "..."
     "..."
     "###"
     "..."
     "..."},
    {'_',
     "..."
     "..."
     "..."
     "..."
     "###"},
    {'+',
     "..."
     ".#."
     "###"
     ".#."
     "..."},
    {'/',
     "..#"
     "..#"
     ".#."
     "#.."
     "#.."},
    {'%',
     "#.#"
     "..#"
     ".#."
     "#.."
     "#.#"},
    {'(',
     ".#."
     "#.."
     "#.."
     "#.."
     ".#."},
    {')',
     ".#."
     "..#"
     "..#"
     "..#"
     ".#."},
    {'\'',
     ".#."
     ".#."
     "..."
     "..."
     "..."},
    {'!',
     ".#."
     ".#."
     ".#."
     "..."
     ".#."},
    {'?',
     "##."
     "..#"
     ".#."
     "..."
     ".#."},
    {' ',
     "..."
     "..."
     "..."
     "..."
     "..."},
};

static const char *glyph(char c) {
    c = (char)toupper((unsigned char)c);
    for (size_t i = 0; i < sizeof GLYPHS / sizeof *GLYPHS; i++)
        if (GLYPHS[i].c == c) return GLYPHS[i].rows;
    return glyph('?');
}

static void put(RgbImage *im, int x, int y, const unsigned char rgb[3]) {
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    memcpy(im->px + ((size_t)y * im->w + x) * 3, rgb, 3);
}

void draw_fill(RgbImage *im, int x1, int y1, int x2, int y2, const unsigned char rgb[3]) {
    for (int y = y1 < 0 ? 0 : y1; y < y2 && y < im->h; y++)
        for (int x = x1 < 0 ? 0 : x1; x < x2 && x < im->w; x++) put(im, x, y, rgb);
}

void draw_box(RgbImage *im, int x1, int y1, int x2, int y2, const unsigned char rgb[3], int t) {
    draw_fill(im, x1, y1, x2 + 1, y1 + t, rgb);
    draw_fill(im, x1, y2 + 1 - t, x2 + 1, y2 + 1, rgb);
    draw_fill(im, x1, y1, x1 + t, y2 + 1, rgb);
    draw_fill(im, x2 + 1 - t, y1, x2 + 1, y2 + 1, rgb);
}

int draw_text_width(const char *text, int scale) { return (int)strlen(text) * 4 * scale - (*text ? scale : 0); }

int draw_text(RgbImage *im, int x, int y, const char *text, int scale, const unsigned char rgb[3]) {
    int x0 = x;
    for (const char *p = text; *p; p++, x += 4 * scale) {
        const char *g = glyph(*p);
        for (int r = 0; r < DRAW_FONT_H; r++)
            for (int c = 0; c < 3; c++)
                if (g[r * 3 + c] == '#')
                    draw_fill(im, x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, rgb);
    }
    return x - x0;
}

const unsigned char *draw_class_color(int c) {
    static const unsigned char palette[20][3] = {
        {0xFF, 0x38, 0x38}, {0xFF, 0x9D, 0x97}, {0xFF, 0x70, 0x1F}, {0xFF, 0xB2, 0x1D}, {0xCF, 0xD2, 0x31},
        {0x48, 0xF9, 0x0A}, {0x92, 0xCC, 0x17}, {0x3D, 0xDB, 0x86}, {0x1A, 0x93, 0x34}, {0x00, 0xD4, 0xBB},
        {0x2C, 0x99, 0xA8}, {0x00, 0xC2, 0xFF}, {0x34, 0x45, 0x93}, {0x64, 0x73, 0xFF}, {0x00, 0x18, 0xEC},
        {0x84, 0x38, 0xFF}, {0x52, 0x00, 0x85}, {0xCB, 0x38, 0xFF}, {0xFF, 0x95, 0xC8}, {0xFF, 0x37, 0xC7},
    };
    return palette[(c < 0 ? -c : c) % 20];
}
