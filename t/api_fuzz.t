#!/usr/bin/perl

# The REST API against malformed and hostile bodies: truncated JSON, deep
# nesting, huge numbers, wrong types, duplicate keys, 1 MB bodies, random
# mutations.  Each gets the right error and leaves the zones unchanged;
# the workers never crash.

use strict;
use warnings;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;

use Test::Nginx;

###############################################################################

my $t = Test::Nginx->new()->has(qw/http zone_sync/);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    keyval_zone  zone=one:1m;
    keyval_zone  zone=tmo:1m timeout=1h;
    keyval_zone  zone=empty:1m timeout=1h;
    keyval_zone  zone=small:32k;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        client_body_buffer_size 16k;
        client_max_body_size    2m;

        location /api/ {
            api write=on;
        }
    }
}

EOF

my @good = (
    '{"new":"v"}',
    '{"new":{"value":"v","expire":100}}',
    '{"new":"\u00e9\ud83d\ude00"}',
    '{"n1":1,"n2":-2.5e+3}',
);

my @syntax = (
    '{"a":"1"}garbage', "{'a':'1'}", '{"a":"1",}', '{"a" "1"}', '{a:"1"}',
    '{"a":NaN}', '{"a":Infinity}', '{"a":01}', '{"a":1.}', '{"a":.5}',
    '{"a":-}', '{"a":1e}', '{"a":"\x"}', '{"a":"\u12"}', '{"a":"\ud800"}',
    '{"a":"\udc00x"}', "{\"a\":\"tab\there\"}", "{\"a\":\"nl\nhere\"}",
    "\x{ef}\x{bb}\x{bf}{\"a\":\"1\"}", "\x00", '{"a":tru}', '{"a":nul}',
    '}', ']', '{"a":"1"}}', '[1,2', '   ', "{\"a\":\"1\"}\x00",
);

my @shape = (
    ['POST', '[]'], ['POST', '["a"]'], ['POST', '"str"'], ['POST', '12'],
    ['POST', 'null'], ['POST', 'true'], ['POST', '{}'],
    ['POST', '{"new":[1]}'], ['POST', '{"new":null}'],
    ['POST', '{"new":{}}'], ['POST', '{"new":{"value":[1]}}'],
    ['POST', '{"new":{"value":null}}'], ['POST', '{"new":{"value":{}}}'],
    ['POST', '{"new":{"expire":"10","value":"v"}}'],
    ['POST', '{"new":{"expire":100}}'],
    ['POST', '{"new":{"value":"v","foo":1}}'],
    ['POST', '{"":"x"}'],
    ['PATCH', '{"keep":[1]}'], ['PATCH', '{"keep":{}}'],
    ['PATCH', '{"keep":{"value":true,"expire":true}}'],
    ['PATCH', '{"keep":"x","other":"y"}'], ['PATCH', '{}'],
    ['PATCH', '[{"keep":"x"}]'],
);

my @expires = ('99999999999999999999999', '9007199254740992', '-1', '1.5',
    '1e3', '0.0', '18446744073709551616');

$t->plan(1 + 2 + @syntax + 4 + @shape + 2 * @expires + 3 + 6 + 2 + 2 + 4 + 2
    + 1 + 1);

$t->run();

###############################################################################

my $json = JSON::PP->new->utf8->canonical->allow_nonref;

sub api {
    my ($method, $uri, $body, %extra) = @_;
    return http_json(port(8080), $method, $uri, $body, %extra);
}

sub code { my ($d) = @_; return ref $d eq 'HASH' ? $d->{error}{code} // '' : '' }

# the contents of every zone, as raw JSON
sub snapshot { return http_content(http_get('/api/9/http/keyvals/')) }

for my $z (qw/one tmo/) {
    (api(POST => "/api/9/http/keyvals/$z", '{"keep":"1","other":"2"}'))[0] == 201
        or die "cannot fill $z\n";
}
my $before = snapshot();
like($before, qr/"keep":"1"/, 'zones filled');

# one hostile request: (method, zone, body, want status, want code)
sub hostile {
    my ($method, $zone, $body, $status, $code, $name) = @_;
    my ($s, $d, $r) = api($method => "/api/9/http/keyvals/$zone", $body);
    my $got = code($d);
    my $ok = $s == $status && (!defined $code || $got eq $code);
    ok($ok && snapshot() eq $before, $name)
        or diag("$method $zone: got $s $got, want $status " . ($code // '')
            . "\n" . ($r // 'no reply'));
}

# truncated JSON: every proper prefix of good bodies

my ($bad, $total) = (0, 0);
for my $body (@good) {
    for my $len (0 .. length($body) - 1) {
        for my $m (qw/POST PATCH/) {
            my $prefix = substr($body, 0, $len);
            my ($s, $d) = api($m => '/api/9/http/keyvals/tmo', $prefix);
            $total++;
            unless ($s == 415 && code($d) eq 'JsonError') {
                $bad++;
                diag("$m '$prefix': $s " . code($d));
            }
        }
    }
}
is($bad, 0, "truncated JSON: $total requests, all 415 JsonError");
is(snapshot(), $before, 'truncated JSON changed nothing');

# syntax errors

for my $body (@syntax) {
    (my $show = $body) =~ s/([^\x20-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    hostile(POST => 'tmo', $body, 415, 'JsonError', "syntax: $show");
}

# deep nesting

hostile(POST => 'tmo', ('{"a":' x 40) . '"1"' . ('}' x 40), 415, 'JsonError',
    'nesting 40');
hostile(POST => 'tmo', '[' x 15000, 415, 'JsonError', 'nesting 15000 [');
hostile(PATCH => 'tmo', ('{"a":' x 2000) . '1' . ('}' x 2000), 415,
    'JsonError', 'nesting 2000 {');
hostile(POST => 'tmo', '{"new":{"value":{"x":{"y":1}}}}', 400,
    'KeyvalFormatError', 'nested value');

# wrong types and shapes

for my $c (@shape) {
    hostile($c->[0], 'tmo', $c->[1], 400, 'KeyvalFormatError',
        "shape: $c->[0] $c->[1]");
}

# huge numbers

for my $e (@expires) {
    hostile(POST => 'tmo', qq({"new":{"value":"v","expire":$e}}), 400,
        'KeyvalFormatError', "expire $e");
    hostile(PATCH => 'tmo', qq({"keep":{"expire":$e}}), 400,
        'KeyvalFormatError', "PATCH expire $e");
}
hostile(POST => 'tmo', '{"new":1' . ('0' x 20000) . '}', 413, 'BodyTooLarge',
    '20000-digit number over buffer');
{
    my $n = '9' x 4000 . 'e99999999';
    my ($s) = api(POST => '/api/9/http/keyvals/empty', qq({"big":$n}));
    is($s, 201, 'huge number value accepted');
    is(http_content(http_get('/api/9/http/keyvals/empty?key=big')),
        qq({"big":"$n"}), 'huge number stored as its text');
    api(DELETE => '/api/9/http/keyvals/empty');
}

# duplicate keys

hostile(POST => 'empty', '{"a":"1","a":"2"}', 400, 'KeyvalFormatError',
    'duplicate keys');
hostile(POST => 'empty', '{"a":"1","b":"2","a":"3"}', 400,
    'KeyvalFormatError', 'duplicate keys, not adjacent');
hostile(PATCH => 'tmo', '{"keep":"x","keep":"y"}', 400, 'KeyvalFormatError',
    'PATCH duplicate keys');
hostile(POST => 'empty', '{"a":{"value":"1","value":"2"}}', 400,
    'KeyvalFormatError', 'duplicate parameter');
hostile(POST => 'empty', '{"a":{"expire":1,"expire":2,"value":"v"}}', 400,
    'KeyvalFormatError', 'duplicate expire');
hostile(POST => 'empty', '{"a":"\u0061","\u0061":"b"}', 400,
    'KeyvalFormatError', 'duplicate keys through escapes');

# all or nothing: one bad entry among good ones

hostile(POST => 'empty', '{"a":"1","b":"2","c":[3]}', 400,
    'KeyvalFormatError', 'one bad entry: nothing stored');
hostile(POST => 'empty', '{"a":"1","b":{"value":"2","expire":-5}}', 400,
    'KeyvalFormatError', 'one bad expire: nothing stored');

# records too large for the zone

hostile(POST => 'small', '{"big":"' . ('x' x 12000) . '"}', 400,
    'KeyvalFormatError', 'record over a quarter of the zone');
hostile(POST => 'small', '{"' . ('k' x 12000) . '":"v"}', 400,
    'KeyvalFormatError', 'key over a quarter of the zone');

# 1 MB bodies

my $mb = 1024 * 1024;
hostile(POST => 'tmo', 'x' x $mb, 413, 'BodyTooLarge', '1 MB of x');
hostile(POST => 'tmo', '{"new":"' . ('x' x ($mb - 10)) . '"}', 413,
    'BodyTooLarge', '1 MB valid JSON');
hostile(PATCH => 'tmo', '[' x $mb, 413, 'BodyTooLarge', '1 MB of [');
hostile(POST => 'tmo', '{"a":"1",' x ($mb / 9), 413, 'BodyTooLarge',
    '1 MB of members');
{
    my $chunk = sprintf("%x\r\n%s\r\n", 65536, '{' x 65536);
    my $r = http("POST /api/9/http/keyvals/tmo HTTP/1.1\r\nHost: localhost\r\n"
        . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        . ($chunk x 16) . "0\r\n\r\n");
    is(http_status($r), 413, '1 MB chunked');
    is(snapshot(), $before, '1 MB chunked changed nothing');
}

# random mutations of good bodies: never a crash, never a 5xx, every
# refusal leaves the zones as they were

srand(20240601);
# (no short expire among them: a record expiring meanwhile would look like
# a change made by a refused request)
my @seeds = ((grep { !/expire/ } @good), '{"keep":null}', '{"a":"1","b":"2"}',
    '{"k":{"value":"v","expire":36000000}}');
my @bytes = (map({ chr } 0 .. 255), '{', '}', '[', ']', '"', ':', ',', '\\',
    'null', 'true', '1e9', '\u0000', '\ud83d');
my ($fails, $n) = (0, 400);
my $snap = $before;
for my $i (1 .. $n) {
    my $body = $seeds[rand @seeds];
    for (1 .. 1 + int rand 4) {
        my $pos = int rand(length($body) + 1);
        my $op = int rand 3;
        if ($op == 0) {
            substr($body, $pos, 1, '');
        } elsif ($op == 1) {
            substr($body, $pos, 0, $bytes[rand @bytes]);
        } else {
            substr($body, $pos, 1, $bytes[rand @bytes]);
        }
    }
    my $m = (qw/POST PATCH/)[rand 2];
    $snap = snapshot();
    my ($s, $d) = api($m => '/api/9/http/keyvals/tmo', $body);
    my $after = snapshot();
    if (!defined $s || $s >= 500) {
        $fails++;
        diag("mutation $i: " . ($s // 'no answer'));
    } elsif ($s >= 400) {
        if ($after ne $snap || code($d) !~ /^(JsonError|KeyvalFormatError|KeyvalKeyNotFound|KeyvalKeyExists)\z/) {
            $fails++;
            diag("mutation $i: $s " . code($d) . " changed the zone");
        }
    }
}
is($fails, 0, "$n random mutations: no crash, no 5xx, refusals change nothing");

my ($s, $d) = api(GET => '/api/9/http/keyvals/one');
is_deeply($d, { keep => 1, other => 2 }, 'zone one untouched throughout');

###############################################################################
