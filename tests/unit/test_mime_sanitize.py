"""HTML of received mail is cleaned before a browser sees it."""

from __future__ import annotations

from whymail.mime.sanitize import sanitize_html


def test_script_blocks_and_their_content_are_removed():
    cleaned = sanitize_html("<p>hello</p><script>alert('x')</script><style>p{}</style>").html
    assert "script" not in cleaned and "alert" not in cleaned and "<style" not in cleaned
    assert "<p>hello</p>" in cleaned


def test_event_handlers_and_javascript_links_are_removed():
    cleaned = sanitize_html('<div onclick="steal()" onmouseover="x()">a</div>'
                            '<a href="javascript:alert(1)">j</a><a href="https://ok.example/">ok</a>').html
    assert "onclick" not in cleaned and "onmouseover" not in cleaned and "javascript" not in cleaned
    assert 'href="https://ok.example/"' in cleaned and 'rel="noopener noreferrer nofollow"' in cleaned


def test_remote_images_are_blocked_and_counted():
    result = sanitize_html('<img src="http://tracker.example/p.gif" alt="a"><img src="https://t.example/x">'
                           '<img src="//t.example/y"><img src="data:image/png;base64,AAAA">')
    assert "tracker.example" not in result.html and "t.example" not in result.html
    assert result.blocked_remote == 3
    assert 'src="data:image/png;base64,AAAA"' in result.html


def test_css_cannot_load_remote_content():
    cleaned = sanitize_html('<p style="color: red; background: url(http://t.example/b.png)">x</p>'
                            '<table background="http://t.example/t.png"><tr><td>c</td></tr></table>').html
    assert "t.example" not in cleaned and "color:red" in cleaned


def test_cid_images_point_at_the_attachment_url_unknown_ones_go():
    result = sanitize_html('<img src="cid:logo@x"><img src="cid:missing@x">', {"logo@x": "/api/v1/messages/7/attachments/2"})
    assert result.html.count("<img") == 2
    assert 'src="/api/v1/messages/7/attachments/2"' in result.html and "missing" not in result.html
    assert result.blocked_remote == 0
